//! Request-log rows: batched inserts, filtered newest-first pages, and the
//! retention purge.

use super::decode::{column, json, to_json};
use super::{Dialect, PageWindow};
use crate::error::StoreResult;
use crate::ids::new_ids;
use crate::records::Page;
use crate::request_logs::{NewRequestLog, RequestLog, RequestLogFilter};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::fmt::Write as _;

const COLUMNS: &str = "id, account_id, at, key_id, workspace_id, environment, client_ip, \
                       permissions, code, latency_us, method, path";

/// Inserts every entry, each with a new `log_<ulid>` id (increasing in
/// entry order); the caller runs this in one transaction, so a batch lands
/// whole or not at all.
///
/// The two backends take different routes because their costs differ
/// (`benches/request_logs.rs` measures both; its header has the numbers):
/// - SQLite binds twelve anonymous `?` parameters per row, 512 rows per
///   statement. sqlx looks up each parameter's name to place it
///   (`sqlite3_bind_parameter_name`, a linear search through the
///   statement's named parameters), so with numbered `$n` parameters
///   binding costs grow with the square of a statement's parameters; an
///   anonymous `?` has no name and costs the same whatever its position.
///   A single JSON parameter unpacked by `json_each` was measured too and
///   cost more CPU per row (~8 µs against ~5): `json_each` hands each row
///   back as JSON text, re-rendered for every `value ->> n` and parsed
///   again.
/// - PostgreSQL gets each chunk of rows as one JSON parameter, unpacked by
///   `jsonb_array_elements`: one bind per chunk instead of twelve per row
///   (each boxed by sqlx's `Any` layer and encoded on the way out), and the
///   same statement text for any chunk length, so that one prepared
///   statement serves every flush.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    dialect: Dialect,
    entries: &[NewRequestLog],
) -> StoreResult<()> {
    let ids = new_ids("log", entries.len());
    match dialect {
        Dialect::Sqlite => insert_sqlite(conn, entries, &ids).await,
        Dialect::Postgres => insert_postgres(conn, entries, &ids).await,
    }
}

/// Rows per SQLite INSERT: 6,144 parameters, under SQLite's default limit
/// of 32,766. Longer statements saved nothing measurable.
const SQLITE_ROWS_PER_STATEMENT: usize = 512;

async fn insert_sqlite(
    conn: &mut AnyConnection,
    entries: &[NewRequestLog],
    ids: &[String],
) -> StoreResult<()> {
    let mut done = 0;
    while done < entries.len() {
        let rows = sqlite_statement_rows(entries.len() - done);
        let sql = sqlite_insert_sql(rows);
        let mut query = sqlx::query(&sql);
        for (entry, id) in entries[done..done + rows].iter().zip(&ids[done..]) {
            query = query
                .bind(id.as_str())
                .bind(entry.account_id.as_str())
                .bind(entry.at)
                .bind(entry.key_id.as_deref())
                .bind(entry.workspace_id.as_deref())
                .bind(entry.environment.as_deref())
                .bind(entry.client_ip.as_deref())
                .bind(to_json(&entry.permissions, "permissions")?)
                .bind(entry.code.as_str())
                .bind(entry.latency_us)
                .bind(entry.method.as_deref())
                .bind(entry.path.as_deref());
        }
        query.execute(&mut *conn).await?;
        done += rows;
    }
    Ok(())
}

/// How many of `remaining` rows the next SQLite statement takes: a full
/// statement, else the largest power of two that fits. sqlx keeps each
/// distinct statement text prepared (up to 100 per connection), and a
/// prepared 512-row INSERT is a large program: cutting the tail into
/// powers of two keeps the shapes to ten, at the cost of at most nine
/// more (shorter) statements per flush.
fn sqlite_statement_rows(remaining: usize) -> usize {
    if remaining >= SQLITE_ROWS_PER_STATEMENT {
        SQLITE_ROWS_PER_STATEMENT
    } else {
        1 << remaining.ilog2()
    }
}

fn sqlite_insert_sql(rows: usize) -> String {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = format!("INSERT INTO request_logs ({COLUMNS}) VALUES ");
    sql.reserve(rows * (ROW.len() + 2));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
    }
    sql
}

/// Rows per PostgreSQL statement, i.e. per JSON document (about 200 KB for
/// typical rows): enough that the per-statement cost vanishes (10,000 rows
/// per statement measured no faster), small enough that a flush of the
/// whole buffer never builds one huge document.
const POSTGRES_ROWS_PER_STATEMENT: usize = 1_000;

/// Each element of `$1` is one row as an array, in `COLUMNS` order; `->>`
/// reads an element as text (SQL NULL for JSON null), so ids, names and the
/// permissions' JSON text arrive exactly as they were sent.
const POSTGRES_INSERT: &str = "INSERT INTO request_logs (id, account_id, at, key_id, \
     workspace_id, environment, client_ip, permissions, code, latency_us, method, path) \
     SELECT r->>0, r->>1, (r->>2)::bigint, r->>3, r->>4, r->>5, r->>6, r->>7, r->>8, \
     (r->>9)::bigint, r->>10, r->>11 FROM jsonb_array_elements($1::jsonb) AS r";

async fn insert_postgres(
    conn: &mut AnyConnection,
    entries: &[NewRequestLog],
    ids: &[String],
) -> StoreResult<()> {
    for (chunk, chunk_ids) in entries
        .chunks(POSTGRES_ROWS_PER_STATEMENT)
        .zip(ids.chunks(POSTGRES_ROWS_PER_STATEMENT))
    {
        sqlx::query(POSTGRES_INSERT)
            .bind(rows_as_json(chunk, chunk_ids)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `[[id, account_id, at, …], …]`. The permissions go as a JSON string
/// holding their JSON text (the column stores text), so that the column
/// holds exactly what [`to_json`] makes, as it always has.
fn rows_as_json(entries: &[NewRequestLog], ids: &[String]) -> StoreResult<String> {
    let rows: Vec<_> = entries
        .iter()
        .zip(ids)
        .map(|(entry, id)| {
            Ok((
                id,
                &entry.account_id,
                entry.at,
                &entry.key_id,
                &entry.workspace_id,
                &entry.environment,
                &entry.client_ip,
                to_json(&entry.permissions, "permissions")?,
                &entry.code,
                entry.latency_us,
                &entry.method,
                &entry.path,
            ))
        })
        .collect::<StoreResult<_>>()?;
    to_json(&rows, "request_logs")
}

/// A value bound to the listing query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// The listing query with a condition for each filter that is set, and
/// nothing for those that are not. Written as `($n IS NULL OR col = $n)`,
/// an unset filter would still be a condition the planner cannot use: SQLite
/// then read every log of the account newest first and filtered, never
/// using the key or workspace index, however rare the key.
fn list_query<'a>(
    account: &'a str,
    filter: &'a RequestLogFilter,
    after: Option<&'a str>,
) -> (String, Vec<Arg<'a>>) {
    let mut conditions = vec![("account_id =", Arg::Text(account))];
    let text = |column, value: &'a Option<String>| value.as_deref().map(|v| (column, Arg::Text(v)));
    conditions.extend(text("key_id =", &filter.key_id));
    conditions.extend(text("workspace_id =", &filter.workspace_id));
    conditions.extend(text("code =", &filter.code));
    conditions.extend(text("environment =", &filter.environment));
    conditions.extend(filter.from.map(|from| ("at >=", Arg::Int(from))));
    conditions.extend(filter.to.map(|to| ("at <", Arg::Int(to))));
    conditions.extend(after.map(|after| ("id <", Arg::Text(after))));
    let mut sql = format!("SELECT {COLUMNS} FROM request_logs WHERE");
    for (n, (condition, _)) in conditions.iter().enumerate() {
        let and = if n == 0 { "" } else { " AND" };
        let _ = write!(sql, "{and} {condition} ${}", n + 1);
    }
    let _ = write!(sql, " ORDER BY id DESC LIMIT ${}", conditions.len() + 1);
    (sql, conditions.into_iter().map(|(_, arg)| arg).collect())
}

/// The account's logs matching `filter`, newest first.
pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    filter: &RequestLogFilter,
    window: PageWindow<'_>,
) -> StoreResult<Page<RequestLog>> {
    let (sql, args) = list_query(account, filter, window.after);
    let mut query = sqlx::query(&sql);
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(int) => query.bind(int),
        };
    }
    let rows = query.bind(window.fetch_limit()).fetch_all(conn).await?;
    let logs = rows.iter().map(log_from_row).collect::<StoreResult<_>>()?;
    Ok(window.into_page(logs, |log: &RequestLog| &log.id))
}

const PURGE: &str = "DELETE FROM request_logs WHERE at < $1";

/// Deletes every log written before `before` (Unix ms); returns how many.
pub(super) async fn purge(conn: &mut AnyConnection, before: i64) -> StoreResult<u64> {
    let done = sqlx::query(PURGE).bind(before).execute(conn).await?;
    Ok(done.rows_affected())
}

fn log_from_row(row: &AnyRow) -> StoreResult<RequestLog> {
    Ok(RequestLog {
        id: column(row, "id")?,
        entry: NewRequestLog {
            account_id: column(row, "account_id")?,
            at: column(row, "at")?,
            key_id: column(row, "key_id")?,
            workspace_id: column(row, "workspace_id")?,
            environment: column(row, "environment")?,
            client_ip: column(row, "client_ip")?,
            permissions: json(row, "permissions")?,
            code: column(row, "code")?,
            latency_us: column(row, "latency_us")?,
            method: column(row, "method")?,
            path: column(row, "path")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlStore;

    #[test]
    fn sqlite_statements_come_in_few_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for total in 0..=3 * SQLITE_ROWS_PER_STATEMENT {
            let mut done = 0;
            while done < total {
                let rows = sqlite_statement_rows(total - done);
                assert!(rows >= 1 && done + rows <= total);
                shapes.insert(rows);
                done += rows;
            }
        }
        assert_eq!(shapes.len(), 10, "{shapes:?}");
        assert_eq!(
            sqlite_insert_sql(2),
            format!(
                "INSERT INTO request_logs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
        );
    }

    #[test]
    fn list_query_has_one_condition_per_filter_set() {
        let filter = RequestLogFilter {
            key_id: Some("key_1".into()),
            to: Some(9),
            ..RequestLogFilter::default()
        };
        let (sql, args) = list_query("acct_1", &filter, Some("log_9"));
        assert!(
            sql.ends_with(
                "WHERE account_id = $1 AND key_id = $2 AND at < $3 AND id < $4 \
                 ORDER BY id DESC LIMIT $5"
            ),
            "{sql}"
        );
        assert_eq!(
            args,
            [
                Arg::Text("acct_1"),
                Arg::Text("key_1"),
                Arg::Int(9),
                Arg::Text("log_9")
            ]
        );
    }

    /// SQLite's plan for `sql`, one line per step.
    async fn sqlite_plan(store: &SqlStore, sql: &str, args: &[Arg<'_>]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for arg in args {
            query = match *arg {
                Arg::Text(text) => query.bind(text),
                Arg::Int(int) => query.bind(int),
            };
        }
        let rows = query.fetch_all(&store.pool).await.unwrap();
        rows.iter()
            .map(|row| column::<String>(row, "detail").unwrap())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Every listing is read through an index that also gives the order
    /// (no sort, no scan), by key and by workspace through their own; the
    /// purge goes through the time index.
    #[tokio::test]
    async fn sqlite_listing_and_purge_use_indexes() {
        let store = crate::sqlite::open("sqlite::memory:").await.unwrap();
        let text = |value: &str| Some(value.to_owned());
        for key in [None, text("key_1")] {
            for workspace in [None, text("ws_1")] {
                for (code, environment) in [(None, None), (text("valid"), text("production"))] {
                    for (from, to) in [(None, None), (Some(1), Some(2))] {
                        for after in [None, Some("log_1")] {
                            let filter = RequestLogFilter {
                                key_id: key.clone(),
                                workspace_id: workspace.clone(),
                                code: code.clone(),
                                environment: environment.clone(),
                                from,
                                to,
                            };
                            let (sql, mut args) = list_query("acct_1", &filter, after);
                            args.push(Arg::Int(51));
                            let plan = sqlite_plan(&store, &sql, &args).await;
                            let index = match (&key, &workspace) {
                                (Some(_), None) => "request_logs_key",
                                (None, Some(_)) => "request_logs_workspace",
                                (Some(_), Some(_)) => "request_logs_", // either
                                (None, None) => "request_logs_account",
                            };
                            assert!(plan.starts_with("SEARCH request_logs USING"), "{plan}");
                            assert!(plan.contains(index), "{filter:?}: {plan}");
                            assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
                        }
                    }
                }
            }
        }
        let purge = sqlite_plan(&store, PURGE, &[Arg::Int(5)]).await;
        assert!(purge.contains("INDEX request_logs_at"), "{purge}");
    }

    /// PostgreSQL's `EXPLAIN` output, one line per row.
    #[cfg(feature = "testing")]
    fn plan_text(rows: &[sqlx::any::AnyRow]) -> String {
        rows.iter()
            .map(|row| column::<String>(row, "QUERY PLAN").unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// On PostgreSQL, which chooses plans by cost (an empty table is best
    /// read whole), that each listing and the purge *can* be read through
    /// the same indexes, in order: the planner is told to avoid scans of the
    /// table, bitmaps and sorts. This also checks that the listing's
    /// comparisons (`id < $n`) take the columns' "C" collation, as the
    /// indexes do (0008), or no index would serve them.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn postgres_listing_and_purge_can_use_indexes() {
        use crate::testing::{Backend, TestDatabase};
        let db = TestDatabase::create(Backend::Postgres).await;
        let store = crate::postgres::open(&db.url).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
            sqlx::query(&format!("SET {setting} = off"))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        let text = |value: &str| Some(value.to_owned());
        let cases = [
            (None, None, None, "request_logs_pkey"),
            (text("key_1"), None, Some("log_1"), "request_logs_key"),
            (None, text("ws_1"), None, "request_logs_workspace"),
            (None, None, Some("log_1"), "request_logs_pkey"),
        ];
        for (key_id, workspace_id, after, index) in cases {
            let filter = RequestLogFilter {
                key_id,
                workspace_id,
                code: text("valid"),
                from: Some(1),
                ..RequestLogFilter::default()
            };
            let (sql, mut args) = list_query("acct_1", &filter, after);
            args.push(Arg::Int(51));
            let explain = format!("EXPLAIN {sql}");
            let mut query = sqlx::query(&explain);
            for arg in &args {
                query = match *arg {
                    Arg::Text(text) => query.bind(text),
                    Arg::Int(int) => query.bind(int),
                };
            }
            let plan = plan_text(&query.fetch_all(&mut *conn).await.unwrap());
            assert!(
                plan.contains(&format!("Index Scan Backward using {index}")),
                "{filter:?}\n{plan}"
            );
            assert!(
                !plan.contains("Sort") && !plan.contains("Seq Scan"),
                "{plan}"
            );
        }
        let purge = plan_text(
            &sqlx::query(&format!("EXPLAIN {PURGE}"))
                .bind(5_i64)
                .fetch_all(&mut *conn)
                .await
                .unwrap(),
        );
        assert!(purge.contains("request_logs_at"), "{purge}");
        drop(conn);
        store.pool.close().await;
    }
}
