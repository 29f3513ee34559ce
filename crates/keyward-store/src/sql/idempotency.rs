//! Idempotency keys: the first request with a key claims it (`pending`),
//! runs, and stores its response (`done`) for retries to replay.

use super::decode::{column, narrowed_opt};
use crate::error::{StoreError, StoreResult};
use crate::ids::now_ms;
use crate::records::IdempotencyClaim;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const PENDING: &str = "pending";
const DONE: &str = "done";

/// A claim this old belongs to a request that died without finishing or
/// abandoning it; a retry with the same fingerprint may take it over.
const STALE_CLAIM_MS: i64 = 5 * 60 * 1000;

pub(super) async fn claim(
    conn: &mut AnyConnection,
    account: &str,
    key: &str,
    fingerprint: &str,
) -> StoreResult<IdempotencyClaim> {
    let now = now_ms();
    // One statement claims a new key or takes over a stale claim of the
    // same request; it returns a row exactly when the claim is ours. Only
    // the same fingerprint may take over: a key reused for another request
    // stays a mismatch.
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (account_id, key, fingerprint, status, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (account_id, key) DO UPDATE SET created_at = excluded.created_at \
         WHERE idempotency_keys.status = $4 AND idempotency_keys.fingerprint = excluded.fingerprint \
         AND idempotency_keys.created_at < $6 \
         RETURNING key",
    )
    .bind(account)
    .bind(key)
    .bind(fingerprint)
    .bind(PENDING)
    .bind(now)
    .bind(now - STALE_CLAIM_MS)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(IdempotencyClaim::Claimed);
    }
    let row = sqlx::query(
        "SELECT fingerprint, status, response_status, response_body FROM idempotency_keys \
         WHERE account_id = $1 AND key = $2",
    )
    .bind(account)
    .bind(key)
    .fetch_one(conn)
    .await?;
    existing_claim(&row, fingerprint)
}

/// What a key claimed before means for a request with `fingerprint`.
fn existing_claim(row: &AnyRow, fingerprint: &str) -> StoreResult<IdempotencyClaim> {
    let stored_fingerprint: String = column(row, "fingerprint")?;
    if stored_fingerprint != fingerprint {
        return Ok(IdempotencyClaim::Mismatch);
    }
    let status: String = column(row, "status")?;
    match status.as_str() {
        PENDING => Ok(IdempotencyClaim::InProgress),
        DONE => {
            let response_status = narrowed_opt::<u16>(row, "response_status")?;
            let body: Option<String> = column(row, "response_body")?;
            match (response_status, body) {
                (Some(status), Some(body)) => Ok(IdempotencyClaim::Completed { status, body }),
                _ => Err(StoreError::corrupt(
                    "idempotency key done without a response",
                )),
            }
        }
        _ => Err(StoreError::corrupt(
            "column status: unknown idempotency state",
        )),
    }
}

/// Stores the response of the request holding the claim. NotFound when no
/// pending claim exists (abandoned, or never made).
pub(super) async fn finish(
    conn: &mut AnyConnection,
    account: &str,
    key: &str,
    status: u16,
    body: &str,
) -> StoreResult<()> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET status = $3, response_status = $4, response_body = $5 \
         WHERE account_id = $1 AND key = $2 AND status = $6",
    )
    .bind(account)
    .bind(key)
    .bind(DONE)
    .bind(i64::from(status))
    .bind(body)
    .bind(PENDING)
    .execute(conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::not_found("idempotency key"));
    }
    Ok(())
}

/// Drops a pending claim; a finished one stays to be replayed.
pub(super) async fn abandon(conn: &mut AnyConnection, account: &str, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND status = $3")
        .bind(account)
        .bind(key)
        .bind(PENDING)
        .execute(conn)
        .await?;
    Ok(())
}
