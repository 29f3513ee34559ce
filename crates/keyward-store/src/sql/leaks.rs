//! Secrets found in public (see migration 0011): the report comes from a
//! scanner that knows only the secret, so the key is found by its hash
//! across accounts, and everything after is scoped to the key's account.

use super::decode::{column, parsed};
use super::{Dialect, audit, lifecycle, tokens};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// Acts on the report (see [`lifecycle::revoke_leaked`] and
/// [`lifecycle::stop_leaked_replaced_secret`]), records it and audits it
/// as `key.leaked`. `None` when no key has the secret.
pub(super) async fn report(
    conn: &mut AnyConnection,
    dialect: Dialect,
    actor: &Actor,
    report: LeakReport,
) -> StoreResult<Option<KeyLeak>> {
    let row = sqlx::query(
        "SELECT account_id, id, hash FROM api_keys WHERE hash = $1 OR previous_hash = $1",
    )
    .bind(&report.hash_hex)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let account: String = column(&row, "account_id")?;
    let key_id: String = column(&row, "id")?;
    let current_hash: String = column(&row, "hash")?;
    let replaced_secret = current_hash != report.hash_hex;
    let (action, reason) = if replaced_secret {
        let action =
            lifecycle::stop_leaked_replaced_secret(conn, dialect, &account, actor, &key_id).await?;
        (action, None)
    } else {
        lifecycle::revoke_leaked(conn, dialect, &account, actor, &key_id).await?
    };
    // After the action, so that what it recorded is not later than the report.
    let now = now_ms();
    if !replaced_secret {
        mark_leaked(conn, &account, &key_id, now).await?;
    }
    let leak = KeyLeak {
        id: new_id("leak"),
        account_id: account,
        key_id,
        reported_at: now,
        reporter: report.reporter,
        location: report.location,
        found_in: report.found_in,
        replaced_secret,
        action,
        reason,
    };
    insert(conn, &leak).await?;
    audit::append(
        conn,
        &leak.account_id,
        actor,
        "key.leaked",
        "key",
        &leak.key_id,
        None,
        Some(json!({
            "reporter": leak.reporter,
            "location": leak.location,
            "found_in": leak.found_in,
            "secret": secret_name(leak.replaced_secret),
            "action": leak.action.as_str(),
            "reason": leak.reason,
        })),
    )
    .await?;
    Ok(Some(leak))
}

/// Deletes the management token with the leaked secret, auditing it as
/// `management_token.leaked`. `None` when no token has it.
pub(super) async fn report_token(
    conn: &mut AnyConnection,
    actor: &Actor,
    report: LeakReport,
) -> StoreResult<Option<LeakedToken>> {
    let row = sqlx::query("SELECT account_id, id FROM management_tokens WHERE hash = $1")
        .bind(&report.hash_hex)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let account: String = column(&row, "account_id")?;
    let id: String = column(&row, "id")?;
    let token = tokens::find(conn, &account, &id)
        .await?
        .ok_or_else(|| StoreError::not_found("management token"))?;
    tokens::delete(conn, &account, &id).await?;
    audit::append(
        conn,
        &account,
        actor,
        "management_token.leaked",
        "management_token",
        &id,
        Some(audit::token_state(&token)),
        Some(json!({
            "reporter": report.reporter,
            "location": report.location,
            "found_in": report.found_in,
            "action": "deleted",
        })),
    )
    .await?;
    Ok(Some(LeakedToken {
        account_id: account,
        token_id: id,
    }))
}

/// The key's reports, newest first; NotFound for a key not in `account`.
pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    key_id: &str,
) -> StoreResult<Vec<KeyLeak>> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT id FROM api_keys WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(key_id)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Err(StoreError::not_found("key"));
    }
    let rows = sqlx::query(
        "SELECT id, account_id, key_id, reported_at, reporter, location, found_in, secret, \
         action, reason FROM key_leaks WHERE account_id = $1 AND key_id = $2 \
         ORDER BY reported_at DESC, id DESC",
    )
    .bind(account)
    .bind(key_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(leak_from_row).collect()
}

async fn mark_leaked(
    conn: &mut AnyConnection,
    account: &str,
    key_id: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query("UPDATE api_keys SET leaked_at = $3 WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(key_id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert(conn: &mut AnyConnection, leak: &KeyLeak) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO key_leaks (id, account_id, key_id, reported_at, reporter, location, \
         found_in, secret, action, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&leak.id)
    .bind(&leak.account_id)
    .bind(&leak.key_id)
    .bind(leak.reported_at)
    .bind(&leak.reporter)
    .bind(leak.location.as_deref())
    .bind(leak.found_in.as_deref())
    .bind(secret_name(leak.replaced_secret))
    .bind(leak.action.as_str())
    .bind(leak.reason.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

fn secret_name(replaced: bool) -> &'static str {
    if replaced { "replaced" } else { "current" }
}

fn leak_from_row(row: &AnyRow) -> StoreResult<KeyLeak> {
    Ok(KeyLeak {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        key_id: column(row, "key_id")?,
        reported_at: column(row, "reported_at")?,
        reporter: column(row, "reporter")?,
        location: column(row, "location")?,
        found_in: column(row, "found_in")?,
        replaced_secret: parsed(row, "secret", |s| match s {
            "current" => Ok(false),
            "replaced" => Ok(true),
            _ => Err("must be current or replaced"),
        })?,
        action: parsed(row, "action", LeakAction::parse)?,
        reason: column(row, "reason")?,
    })
}
