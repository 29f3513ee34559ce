//! Request-log rows: multi-row inserts, filtered newest-first pages, and the
//! retention purge.

use super::decode::{column, json, to_json};
use super::{Dialect, PageWindow};
use crate::error::StoreResult;
use crate::ids::new_id;
use crate::records::Page;
use crate::request_logs::{NewRequestLog, RequestLog, RequestLogFilter};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const COLUMNS: usize = 10;

/// Rows per INSERT statement. PostgreSQL: 500 (5,000 parameters, far under
/// its 65,535), to save round trips. SQLite: 16, because binding looks each
/// parameter up in a list (`sqlite3_bind_parameter_name`), so a statement's
/// binding cost grows with the square of its parameters — at 500 rows the
/// flush alone took 40 % of a core under load.
fn rows_per_statement(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 16,
        Dialect::Postgres => 500,
    }
}

/// Inserts every entry with multi-row INSERTs; the caller runs them in one
/// transaction.
pub(super) async fn insert(
    conn: &mut AnyConnection,
    dialect: Dialect,
    entries: &[NewRequestLog],
) -> StoreResult<()> {
    for chunk in entries.chunks(rows_per_statement(dialect)) {
        let values = (0..chunk.len())
            .map(|row| format!("({})", super::placeholders(row * COLUMNS + 1, COLUMNS)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO request_logs (id, account_id, at, key_id, workspace_id, environment, \
             client_ip, permissions, code, latency_us) VALUES {values}"
        );
        let mut query = sqlx::query(&sql);
        for entry in chunk {
            query = query
                .bind(new_id("log"))
                .bind(entry.account_id.clone())
                .bind(entry.at)
                .bind(entry.key_id.clone())
                .bind(entry.workspace_id.clone())
                .bind(entry.environment.clone())
                .bind(entry.client_ip.clone())
                .bind(to_json(&entry.permissions, "permissions")?)
                .bind(entry.code.clone())
                .bind(entry.latency_us);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The account's logs matching `filter`, newest first.
pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    filter: &RequestLogFilter,
    window: PageWindow<'_>,
) -> StoreResult<Page<RequestLog>> {
    let rows = sqlx::query(
        "SELECT id, account_id, at, key_id, workspace_id, environment, client_ip, permissions, \
         code, latency_us FROM request_logs WHERE account_id = $1 \
         AND ($2 IS NULL OR key_id = $2) AND ($3 IS NULL OR workspace_id = $3) \
         AND ($4 IS NULL OR code = $4) AND ($5 IS NULL OR environment = $5) \
         AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7) \
         AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9",
    )
    .bind(account)
    .bind(filter.key_id.as_deref())
    .bind(filter.workspace_id.as_deref())
    .bind(filter.code.as_deref())
    .bind(filter.environment.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let logs = rows.iter().map(log_from_row).collect::<StoreResult<_>>()?;
    Ok(window.into_page(logs, |log: &RequestLog| &log.id))
}

/// Deletes every log written before `before` (Unix ms); returns how many.
pub(super) async fn purge(conn: &mut AnyConnection, before: i64) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM request_logs WHERE at < $1")
        .bind(before)
        .execute(conn)
        .await?;
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
        },
    })
}
