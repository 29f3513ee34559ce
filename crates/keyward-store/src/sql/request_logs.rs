//! Request logs, stored in blocks: batched inserts, filtered newest-first
//! pages, and the retention purge.
//!
//! A row per verification cost SQLite 3–6 µs of CPU a row with one key and
//! 13–20 µs with a thousand (a table and four index inserts each), spent once
//! a second by the flush and felt by every request answered meanwhile
//! (docs/PERFORMANCE.md). So a flush writes one row per *block*: the entries
//! of one batch that share an account, key, workspace and environment, at
//! most 1,024 of them, as one JSON array ([`RequestLogBatch`] builds them).
//! Those four columns, which the indexes need, are the block's; everything
//! else is the entry's.
//!
//! Ids stay what they were, one `log_<ulid>` per entry, increasing in entry
//! order across the whole batch: the batch reserves a range of consecutive
//! ULIDs within one millisecond ([`IdRange`]), the block keeps the range's
//! start (`batch_id`) and each entry its offset in the batch. A block's `id`
//! and `last_id` are its first and last entries'. Blocks of one batch
//! interleave, so a page merges blocks read in the order of their newest
//! entry (`list`).

use super::Dialect;
use super::PageWindow;
use super::decode::{column, json, to_json};
use crate::error::{StoreError, StoreResult};
use crate::ids::IdRange;
use crate::records::Page;
use crate::request_logs::{
    NewRequestLog, RequestLog, RequestLogBatch, RequestLogFilter, StoredEntry, code_bit,
};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

const COLUMNS: &str = "id, last_id, batch_id, account_id, key_id, workspace_id, environment, \
                       entry_count, first_at, last_at, codes, entries";

/// Inserts the batch's blocks, their entries' ids `log_<ulid>` increasing
/// in entry order; the caller runs this in one transaction, so a batch
/// lands whole or not at all.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    dialect: Dialect,
    batch: &RequestLogBatch,
) -> StoreResult<()> {
    // A batch's offsets are `u32`s (`RequestLogBatch::push`).
    let range = IdRange::reserve(batch.len() as u32);
    let batch_id = range.id("log", 0);
    let blocks: Vec<_> = batch.blocks().collect();
    let mut done = 0;
    while done < blocks.len() {
        let rows = statement_rows(blocks.len() - done);
        let sql = insert_sql(dialect, rows);
        let mut query = sqlx::query(&sql);
        for block in &blocks[done..done + rows] {
            let entries = std::str::from_utf8(&block.entries)
                .map_err(|_| StoreError::corrupt("request log block: not UTF-8"))?;
            query = query
                .bind(range.id("log", block.first))
                .bind(range.id("log", block.last))
                .bind(batch_id.as_str())
                .bind(block.group.account_id.as_str())
                .bind(block.group.key_id.as_deref())
                .bind(block.group.workspace_id.as_deref())
                .bind(block.group.environment.as_deref())
                .bind(i64::from(block.entry_count))
                .bind(block.first_at)
                .bind(block.last_at)
                .bind(block.codes)
                .bind(entries);
        }
        query.execute(&mut *conn).await?;
        done += rows;
    }
    Ok(())
}

/// Blocks at most per INSERT: 768 parameters.
const BLOCKS_PER_STATEMENT: usize = 64;

/// How many of `remaining` blocks the next INSERT takes: a full statement,
/// else the largest power of two that fits. sqlx keeps each distinct
/// statement text prepared (up to 100 per connection); cutting the tail
/// into powers of two keeps the shapes to seven.
fn statement_rows(remaining: usize) -> usize {
    if remaining >= BLOCKS_PER_STATEMENT {
        BLOCKS_PER_STATEMENT
    } else {
        1 << remaining.ilog2()
    }
}

/// A multi-row INSERT. SQLite gets anonymous `?` parameters: sqlx looks up
/// each parameter's name to place it (`sqlite3_bind_parameter_name`, a
/// linear search), so numbered ones cost the square of their count.
fn insert_sql(dialect: Dialect, rows: usize) -> String {
    let per_row = COLUMNS.split(',').count();
    let mut sql = format!("INSERT INTO request_log_blocks ({COLUMNS}) VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..per_row {
            if column > 0 {
                sql.push_str(", ");
            }
            match dialect {
                Dialect::Sqlite => sql.push('?'),
                Dialect::Postgres => {
                    let _ = write!(sql, "${}", row * per_row + column + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// A value bound to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// The conditions on blocks that `filter` makes, each with `?` where its
/// parameter goes: the block's own columns exactly, its time span
/// overlapping `from..to`, and the code among its entries' (so that a
/// search for a rare code skips the blocks without it undecoded). Only the
/// filters that are set become conditions, so that the planner can use the
/// key or workspace index.
fn block_conditions<'a>(
    account: &'a str,
    filter: &'a RequestLogFilter,
) -> Vec<(&'static str, Arg<'a>)> {
    let mut conditions = vec![("account_id = ?", Arg::Text(account))];
    let text = |column, value: &'a Option<String>| value.as_deref().map(|v| (column, Arg::Text(v)));
    conditions.extend(text("key_id = ?", &filter.key_id));
    conditions.extend(text("workspace_id = ?", &filter.workspace_id));
    conditions.extend(text("environment = ?", &filter.environment));
    conditions.extend(filter.from.map(|from| ("last_at >= ?", Arg::Int(from))));
    conditions.extend(filter.to.map(|to| ("first_at < ?", Arg::Int(to))));
    let code = filter.code.as_deref().map(code_bit);
    conditions.extend(code.map(|bit| ("(codes & ?) <> 0", Arg::Int(bit))));
    conditions
}

const BLOCK_SELECT: &str = "SELECT last_id, batch_id, account_id, key_id, workspace_id, environment, entries \
     FROM request_log_blocks WHERE";

/// The query for `conditions` and then `more`, their `?`s numbered from
/// `$1` in order.
fn block_query(conditions: &[(&'static str, Arg<'_>)], more: &[&str], rest: &str) -> String {
    let mut sql = BLOCK_SELECT.to_owned();
    let all = conditions
        .iter()
        .map(|(condition, _)| *condition)
        .chain(more.iter().copied());
    for (n, condition) in all.enumerate() {
        let and = if n == 0 { " " } else { " AND " };
        sql.push_str(and);
        sql.push_str(&condition.replace('?', &format!("${}", n + 1)));
    }
    sql.push_str(rest);
    sql
}

/// The next blocks by their newest entry, newest first: `LIMIT` the first
/// parameter after the conditions, below the second when `below`.
fn next_blocks_query(conditions: &[(&'static str, Arg<'_>)], below: bool) -> String {
    let n = conditions.len();
    match below {
        true => block_query(
            conditions,
            &["last_id < ?"],
            &format!(" ORDER BY last_id DESC LIMIT ${}", n + 2),
        ),
        false => block_query(
            conditions,
            &[],
            &format!(" ORDER BY last_id DESC LIMIT ${}", n + 1),
        ),
    }
}

/// The blocks holding entries on both sides of a cursor (`id <` it, and
/// `last_id` from it to the end of its millisecond): a batch's range never
/// leaves its millisecond ([`IdRange`]), so only the cursor's own batch can
/// straddle it, and the bound keeps the search within that millisecond.
fn straddling_query(conditions: &[(&'static str, Arg<'_>)]) -> String {
    block_query(conditions, &["id < ?", "last_id >= ?", "last_id < ?"], "")
}

/// The end of `cursor`'s millisecond as a bound on ids: its prefix and
/// ULID time (`log_` and ten characters), then `~`, which sorts after every
/// ULID character. Works for any string a client sends.
fn millisecond_end(cursor: &str) -> String {
    let prefix: String = cursor.chars().take("log_".len() + 10).collect();
    prefix + "~"
}

fn bind_all<'q, 'a: 'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: impl IntoIterator<Item = Arg<'a>>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(int) => query.bind(int),
        };
    }
    query
}

/// Blocks fetched by the first query of a page; each further query fetches
/// twice as many, up to [`MAX_BLOCKS_PER_FETCH`]. A busy key's blocks are
/// large (one is a page and more), many keys' are small.
const FIRST_BLOCKS_PER_FETCH: i64 = 4;
const MAX_BLOCKS_PER_FETCH: i64 = 256;

/// The account's logs matching `filter`, newest first.
///
/// Blocks are read in the order of their newest entry, through the index of
/// the filters set, and merged: a block is decoded only when its newest
/// entry could come next, and entries already decoded that are newer than
/// every entry of the blocks left go out first. So a page reads the blocks
/// around its place and no others (an export walks every page). With a
/// cursor, the blocks holding entries on both sides of it come first.
pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    filter: &RequestLogFilter,
    window: PageWindow<'_>,
) -> StoreResult<Page<RequestLog>> {
    let wanted = window.size + 1;
    let conditions = block_conditions(account, filter);
    let args = || conditions.iter().map(|(_, arg)| *arg);
    let mut decoded = BinaryHeap::new();
    if let Some(after) = window.after {
        let end = millisecond_end(after);
        let sql = straddling_query(&conditions);
        let query = bind_all(sqlx::query(&sql), args())
            .bind(after)
            .bind(after)
            .bind(&end);
        for row in query.fetch_all(&mut *conn).await? {
            decoded.extend(block_logs(&row, filter, Some(after))?.into_iter().map(ById));
        }
    }
    let mut logs = Vec::with_capacity(wanted);
    let mut fetched = VecDeque::new();
    let mut below = window.after.map(str::to_owned);
    let mut fetch = Some(FIRST_BLOCKS_PER_FETCH);
    while logs.len() < wanted {
        if let (true, Some(count)) = (fetched.is_empty(), fetch) {
            let sql = next_blocks_query(&conditions, below.is_some());
            let query = bind_all(sqlx::query(&sql), args());
            let query = match &below {
                Some(below) => query.bind(below.as_str()),
                None => query,
            };
            let rows = query.bind(count).fetch_all(&mut *conn).await?;
            fetch = (rows.len() as i64 == count).then_some((count * 2).min(MAX_BLOCKS_PER_FETCH));
            for row in rows {
                fetched.push_back((column::<String>(&row, "last_id")?, row));
            }
            below = fetched.back().map(|(last_id, _)| last_id.clone());
        }
        let newest_undecoded = fetched.front().map(|(last_id, _)| last_id);
        match decoded.peek() {
            Some(ById(log)) if newest_undecoded.is_none_or(|id| log.id > *id) => {
                logs.extend(decoded.pop().map(|ById(log)| log));
            }
            _ => match fetched.pop_front() {
                Some((_, row)) => decoded.extend(
                    block_logs(&row, filter, window.after)?
                        .into_iter()
                        .map(ById),
                ),
                None => break,
            },
        }
    }
    Ok(window.into_page(logs, |log: &RequestLog| &log.id))
}

/// A log ordered by its id alone.
struct ById(RequestLog);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

/// The logs of one block that pass the filters the block's columns cannot
/// decide (code, time) and come before the cursor.
fn block_logs(
    row: &AnyRow,
    filter: &RequestLogFilter,
    after: Option<&str>,
) -> StoreResult<Vec<RequestLog>> {
    let batch_id: String = column(row, "batch_id")?;
    let block = BlockRow {
        account_id: column(row, "account_id")?,
        key_id: column(row, "key_id")?,
        workspace_id: column(row, "workspace_id")?,
        environment: column(row, "environment")?,
    };
    let range = IdRange::starting_at(&batch_id);
    let stored: Vec<StoredEntry> = json(row, "entries")?;
    let mut logs = Vec::new();
    for (offset, at, client_ip, permissions, code, latency_us, method, path) in stored {
        let wanted = filter.code.as_ref().is_none_or(|c| *c == code)
            && filter.from.is_none_or(|from| at >= from)
            && filter.to.is_none_or(|to| at < to);
        if !wanted {
            continue;
        }
        // Offset 0 is the batch's own id, kept as written (rows moved from
        // the table of one row per log are batches of one).
        let id = match (offset, range) {
            (0, _) => batch_id.clone(),
            (_, Some(range)) => range.id("log", offset),
            (_, None) => return Err(StoreError::corrupt("column batch_id: not a log id")),
        };
        if after.is_some_and(|after| id.as_str() >= after) {
            continue;
        }
        logs.push(RequestLog {
            id,
            entry: NewRequestLog {
                account_id: block.account_id.clone(),
                at,
                key_id: block.key_id.clone(),
                workspace_id: block.workspace_id.clone(),
                environment: block.environment.clone(),
                client_ip,
                permissions,
                code,
                latency_us,
                method,
                path,
            },
        });
    }
    Ok(logs)
}

/// The columns a block's entries share, as read back.
struct BlockRow {
    account_id: String,
    key_id: Option<String>,
    workspace_id: Option<String>,
    environment: Option<String>,
}

/// Blocks wholly older than `$1`.
const PURGE_BLOCKS: &str =
    "DELETE FROM request_log_blocks WHERE first_at < $1 AND last_at < $1 RETURNING entry_count";

/// Once [`PURGE_BLOCKS`] has run, the blocks left with an entry older than
/// `$1`: those holding entries on both sides of it, a flush's worth at most.
const STRADDLING_BLOCKS: &str =
    "SELECT account_id, last_id, entries FROM request_log_blocks WHERE first_at < $1";

const TRIM_BLOCK: &str = "UPDATE request_log_blocks SET entries = $1, entry_count = $2, \
     first_at = $3 WHERE account_id = $4 AND last_id = $5";

/// Deletes every log written before `before` (Unix ms); returns how many.
/// Whole blocks go at once; a block straddling `before` keeps its newer
/// entries (and their ids: entries keep their offsets), and its `codes`,
/// which may then name a code no longer among them: a search for it
/// decodes the block for nothing, never misses an entry.
pub(super) async fn purge(conn: &mut AnyConnection, before: i64) -> StoreResult<u64> {
    let mut purged: u64 = 0;
    for row in sqlx::query(PURGE_BLOCKS)
        .bind(before)
        .fetch_all(&mut *conn)
        .await?
    {
        purged += column::<i64>(&row, "entry_count")?.unsigned_abs();
    }
    let straddling = sqlx::query(STRADDLING_BLOCKS)
        .bind(before)
        .fetch_all(&mut *conn)
        .await?;
    for row in &straddling {
        let mut entries: Vec<StoredEntry> = json(row, "entries")?;
        let count = entries.len();
        entries.retain(|entry| entry.1 >= before);
        purged += (count - entries.len()) as u64;
        let first_at = entries.iter().map(|entry| entry.1).min().unwrap_or(before);
        sqlx::query(TRIM_BLOCK)
            .bind(to_json(&entries, "request_logs")?)
            .bind(entries.len() as i64)
            .bind(first_at)
            .bind(column::<String>(row, "account_id")?)
            .bind(column::<String>(row, "last_id")?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlStore;

    #[test]
    fn statements_come_in_few_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for total in 0..=3 * BLOCKS_PER_STATEMENT {
            let mut done = 0;
            while done < total {
                let rows = statement_rows(total - done);
                assert!(rows >= 1 && done + rows <= total);
                shapes.insert(rows);
                done += rows;
            }
        }
        assert_eq!(shapes.len(), 7, "{shapes:?}");
        let values = |sql: String| sql.split_once(" VALUES ").unwrap().1.to_owned();
        assert_eq!(
            values(insert_sql(Dialect::Sqlite, 2)),
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        assert_eq!(
            values(insert_sql(Dialect::Postgres, 2)),
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12), \
             ($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
        );
    }

    #[test]
    fn block_queries_have_one_condition_per_filter_set() {
        let filter = RequestLogFilter {
            key_id: Some("key_1".into()),
            to: Some(9),
            ..RequestLogFilter::default()
        };
        let conditions = block_conditions("acct_1", &filter);
        let select = |sql: String| sql.split_once(" WHERE ").unwrap().1.to_owned();
        assert_eq!(
            select(next_blocks_query(&conditions, true)),
            "account_id = $1 AND key_id = $2 AND first_at < $3 AND last_id < $4 \
             ORDER BY last_id DESC LIMIT $5"
        );
        assert_eq!(
            select(next_blocks_query(&conditions, false)),
            "account_id = $1 AND key_id = $2 AND first_at < $3 ORDER BY last_id DESC LIMIT $4"
        );
        assert_eq!(
            select(straddling_query(&conditions)),
            "account_id = $1 AND key_id = $2 AND first_at < $3 AND id < $4 \
             AND last_id >= $5 AND last_id < $6"
        );
        let args: Vec<_> = conditions.iter().map(|(_, arg)| *arg).collect();
        assert_eq!(args, [Arg::Text("acct_1"), Arg::Text("key_1"), Arg::Int(9)]);

        let by_code = RequestLogFilter {
            code: Some("rate_limited".into()),
            ..RequestLogFilter::default()
        };
        let conditions = block_conditions("acct_1", &by_code);
        assert_eq!(
            select(next_blocks_query(&conditions, false)),
            "account_id = $1 AND (codes & $2) <> 0 ORDER BY last_id DESC LIMIT $3"
        );
        assert_eq!(conditions[1].1, Arg::Int(1 << 11));
    }

    #[test]
    fn a_cursors_millisecond_ends_after_every_id_made_in_it() {
        let range = IdRange::reserve(1_000);
        let (first, last) = (range.id("log", 0), range.id("log", 999));
        let end = millisecond_end(&first);
        assert!(first < end && last < end, "{first} {last} {end}");
        assert!(new_later_id(&first) > end);
        assert_eq!(millisecond_end("log_x"), "log_x~");
    }

    /// An id made in a later millisecond than `id`'s.
    fn new_later_id(id: &str) -> String {
        loop {
            let later = crate::ids::new_id("log");
            if later[..14] != id[..14] {
                return later;
            }
        }
    }

    /// Every filter combination.
    fn listing_filters() -> Vec<RequestLogFilter> {
        let text = |value: &str| Some(value.to_owned());
        let mut filters = Vec::new();
        for key_id in [None, text("key_1")] {
            for workspace_id in [None, text("ws_1")] {
                for environment in [None, text("production")] {
                    for (from, to) in [(None, None), (Some(1), Some(2))] {
                        filters.push(RequestLogFilter {
                            key_id: key_id.clone(),
                            workspace_id: workspace_id.clone(),
                            code: text("valid"),
                            environment: environment.clone(),
                            from,
                            to,
                        });
                    }
                }
            }
        }
        filters
    }

    /// A listing's queries (the next blocks, with and without a bound, and
    /// the blocks straddling a cursor), each with its parameters.
    fn listing_queries(filter: &RequestLogFilter) -> [(String, Vec<Arg<'_>>); 3] {
        let conditions = block_conditions("acct_1", filter);
        let args = |more: &[Arg<'static>]| {
            let mut args: Vec<_> = conditions.iter().map(|(_, arg)| *arg).collect();
            args.extend_from_slice(more);
            args
        };
        [
            (next_blocks_query(&conditions, false), args(&[Arg::Int(4)])),
            (
                next_blocks_query(&conditions, true),
                args(&[Arg::Text("log_2"), Arg::Int(4)]),
            ),
            (
                straddling_query(&conditions),
                args(&[Arg::Text("log_2"), Arg::Text("log_2"), Arg::Text("log_3")]),
            ),
        ]
    }

    /// The index a listing with `filter` should be read through.
    fn index_for(filter: &RequestLogFilter) -> &'static str {
        match (&filter.key_id, &filter.workspace_id) {
            (Some(_), None) => "request_log_blocks_key",
            (None, Some(_)) => "request_log_blocks_workspace",
            (Some(_), Some(_)) => "request_log_blocks_", // either
            (None, None) => "request_log_blocks_account",
        }
    }

    /// SQLite's plan for `sql`, one line per step.
    async fn sqlite_plan(store: &SqlStore, sql: &str, args: &[Arg<'_>]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = bind_all(sqlx::query(&explain), args.iter().copied())
            .fetch_all(&store.pool)
            .await
            .unwrap();
        rows.iter()
            .map(|row| column::<String>(row, "detail").unwrap())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Every listing query is read through an index, by key and by
    /// workspace through their own, which gives the order (no sort); the
    /// purge goes through the time index.
    #[tokio::test]
    async fn sqlite_listing_and_purge_use_indexes() {
        let store = crate::sqlite::open("sqlite::memory:").await.unwrap();
        for filter in listing_filters() {
            for (sql, args) in listing_queries(&filter) {
                let plan = sqlite_plan(&store, &sql, &args).await;
                assert!(
                    plan.starts_with("SEARCH request_log_blocks USING"),
                    "{plan}"
                );
                assert!(plan.contains(index_for(&filter)), "{filter:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {sql}: {plan}");
            }
        }
        for purge in [PURGE_BLOCKS, STRADDLING_BLOCKS] {
            let plan = sqlite_plan(&store, purge, &[Arg::Int(5)]).await;
            assert!(plan.contains("INDEX request_log_blocks_first_at"), "{plan}");
        }
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
    /// read whole), that each listing query and the purge *can* be read
    /// through the same indexes: the planner is told to avoid scans of the
    /// table, bitmaps and sorts. This also checks that the comparisons of
    /// ids take the columns' "C" collation, as the indexes do, or no index
    /// would serve them.
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
        for filter in listing_filters() {
            for (sql, args) in listing_queries(&filter) {
                let explain = format!("EXPLAIN {sql}");
                let query = bind_all(sqlx::query(&explain), args.iter().copied());
                let plan = plan_text(&query.fetch_all(&mut *conn).await.unwrap());
                // Blocks in order come through the filter's index; those
                // around a cursor (unordered) may come through any index
                // that bounds them: on an empty table the planner picks
                // among equals.
                let index = match sql.contains("ORDER BY") {
                    true => index_for(&filter),
                    false => "request_log_blocks_",
                };
                assert!(plan.contains(index), "{filter:?}\n{sql}\n{plan}");
                assert!(
                    !plan.contains("Sort") && !plan.contains("Seq Scan"),
                    "{sql}\n{plan}"
                );
            }
        }
        for purge in [PURGE_BLOCKS, STRADDLING_BLOCKS] {
            let plan = plan_text(
                &sqlx::query(&format!("EXPLAIN {purge}"))
                    .bind(5_i64)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap(),
            );
            assert!(plan.contains("request_log_blocks_first_at"), "{plan}");
        }
        drop(conn);
        store.pool.close().await;
    }
}
