//! The files `export_logs` jobs write, stored as numbered parts (see
//! migration 0010): written by the job, streamed part by part to the
//! download, deleted by the retention purge.

use crate::error::StoreResult;
use sqlx::AnyConnection;

/// Deletes every part the job wrote so far.
pub(super) async fn clear(
    conn: &mut AnyConnection,
    account: &str,
    job_id: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM job_export_parts WHERE account_id = $1 AND job_id = $2")
        .bind(account)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn add_part(
    conn: &mut AnyConnection,
    account: &str,
    job_id: &str,
    part: u32,
    data: &[u8],
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO job_export_parts (job_id, part, account_id, data, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(job_id)
    .bind(i64::from(part))
    .bind(account)
    .bind(data.to_vec())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn part(
    conn: &mut AnyConnection,
    account: &str,
    job_id: &str,
    part: u32,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT data FROM job_export_parts WHERE account_id = $1 AND job_id = $2 AND part = $3",
    )
    .bind(account)
    .bind(job_id)
    .bind(i64::from(part))
    .fetch_optional(conn)
    .await?)
}

pub(super) async fn purge(conn: &mut AnyConnection, before: i64) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM job_export_parts WHERE created_at < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
