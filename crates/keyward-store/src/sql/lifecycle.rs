//! The key lifecycle rules of seeds 000, 001, 003 and 004: rotation with a
//! grace period, ending it early, and revoking or deleting without leaving a
//! workspace without credentials or an integration without its key.

use super::{Dialect, audit, integrations, keys};
use crate::error::{StoreError, StoreResult};
use crate::ids::now_ms;
use crate::records::*;
use keyward_core::{KeyKind, KeyStatus};
use serde_json::json;
use sqlx::AnyConnection;

/// The longest a replaced secret may keep working (seed 003 asks for
/// rotation to complete; a week covers any deploy cycle).
pub const MAX_GRACE_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Inserts a key and its `key.created` audit event.
pub(super) async fn create_audited(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    new: NewKey,
) -> StoreResult<ApiKey> {
    let key = keys::create(conn, dialect, account, new).await?;
    audit::append(
        conn,
        account,
        actor,
        "key.created",
        "key",
        &key.id,
        None,
        Some(audit::key_state(&key)),
    )
    .await?;
    Ok(key)
}

/// Inserts keys issued elsewhere, each with its `key.imported` event.
pub(super) async fn import(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    new: Vec<NewKey>,
) -> StoreResult<Vec<ApiKey>> {
    let mut imported = Vec::with_capacity(new.len());
    for (index, new) in new.into_iter().enumerate() {
        let in_item = |e: StoreError| StoreError::InItem {
            list: "keys",
            index,
            source: Box::new(e),
        };
        keys::require_secret_free(conn, &new.hash_hex)
            .await
            .map_err(in_item)?;
        let key = keys::create(conn, dialect, account, new)
            .await
            .map_err(in_item)?;
        audit::append(
            conn,
            account,
            actor,
            "key.imported",
            "key",
            &key.id,
            None,
            Some(audit::key_state(&key)),
        )
        .await?;
        imported.push(key);
    }
    Ok(imported)
}

async fn locked_key(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    id: &str,
) -> StoreResult<ApiKey> {
    keys::find(conn, account, id, dialect.row_lock("FOR UPDATE OF k"))
        .await?
        .ok_or_else(|| StoreError::not_found("key"))
}

/// Replaces the key's secret, keeping id, name, permissions and
/// configuration. The replaced secret keeps working until `grace_until`
/// (now, when there is no grace period); a secret replaced by an earlier
/// rotation stops being recognised at all. Uses before the rotation were the
/// old secret's, so its last use moves to the rotation record.
pub(super) async fn rotate(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    rotation: KeyReplacement,
) -> StoreResult<ApiKey> {
    let key = locked_key(conn, dialect, account, &rotation.key_id).await?;
    if key.status == KeyStatus::Revoked {
        return Err(StoreError::Conflict {
            field: "status",
            message: "a revoked key cannot be rotated; issue a new key".into(),
        });
    }
    let (rotated, _) = replace_secret(conn, account, actor, &key, rotation, None, now_ms()).await?;
    Ok(rotated)
}

/// The rotation itself, on a key the caller has locked and checked, with
/// its `key.rotated` audit event (naming the bulk job that did it, if one
/// did). Returns the key as it is now and the replaced secret's deadline.
pub(super) async fn replace_secret(
    conn: &mut AnyConnection,
    account: &str,
    actor: &Actor,
    key: &ApiKey,
    rotation: KeyReplacement,
    job_id: Option<&str>,
    now: i64,
) -> StoreResult<(ApiKey, i64)> {
    let grace_until = now + rotation.grace_ms.clamp(0, MAX_GRACE_MS);
    sqlx::query(
        "UPDATE api_keys SET previous_hash = hash, previous_hint = hint, previous_expires_at = $3, \
         previous_last_used_at = last_used_at, hash = $4, hint = $5, public_value = $6, \
         last_used_at = NULL, last_used_ip = NULL, leaked_at = NULL, updated_at = $7 \
         WHERE account_id = $1 AND id = $2",
    )
    .bind(account)
    .bind(&key.id)
    .bind(grace_until)
    .bind(&rotation.hash_hex)
    .bind(&rotation.hint)
    .bind(&rotation.public_value)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let rotated = reread(conn, account, &key.id).await?;
    let mut after = json!({"hint": rotated.hint, "old_secret_expires_at": grace_until});
    if let Some(job_id) = job_id {
        after["job_id"] = json!(job_id);
    }
    audit::append(
        conn,
        account,
        actor,
        "key.rotated",
        "key",
        &key.id,
        Some(json!({"hint": key.hint})),
        Some(after),
    )
    .await?;
    Ok((rotated, grace_until))
}

/// Stops the replaced secret now instead of at the end of its grace period.
pub(super) async fn end_grace(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    id: &str,
) -> StoreResult<ApiKey> {
    let key = locked_key(conn, dialect, account, id).await?;
    let now = now_ms();
    let Some(rotation) = key.rotation.as_ref().filter(|r| r.expires_at > now) else {
        return Err(StoreError::Conflict {
            field: "id",
            message: "the key has no rotation grace period in progress".into(),
        });
    };
    sqlx::query("UPDATE api_keys SET previous_expires_at = $3, updated_at = $3 WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let before = json!({"old_secret_expires_at": rotation.expires_at});
    audit::append(
        conn,
        account,
        actor,
        "key.grace_ended",
        "key",
        id,
        Some(before),
        Some(json!({"old_secret_expires_at": now})),
    )
    .await?;
    reread(conn, account, id).await
}

/// Revokes for good, unless a rule refuses: see [`check_removable`].
pub(super) async fn revoke(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    id: &str,
    force: bool,
) -> StoreResult<ApiKey> {
    let key = locked_key(conn, dialect, account, id).await?;
    if key.status == KeyStatus::Revoked {
        return Ok(key);
    }
    check_removable(conn, dialect, account, &key, force, "revoke").await?;
    keys::set_status(conn, account, actor, id, KeyStatus::Revoked).await
}

/// Revokes a key whose secret was found in public. Integrations using it
/// lose it: the secret is anyone's now. The one refusal kept is the
/// workspace's last active ingest key — revoking it would stop all the
/// workspace's data — which is flagged instead, with the reason, for a
/// person to replace first.
pub(super) async fn revoke_leaked(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    id: &str,
) -> StoreResult<(LeakAction, Option<String>)> {
    let key = locked_key(conn, dialect, account, id).await?;
    if key.status == KeyStatus::Revoked {
        return Ok((LeakAction::None, None));
    }
    match check_removable(conn, dialect, account, &key, true, "revoke").await {
        Ok(()) => {
            keys::set_status(conn, account, actor, id, KeyStatus::Revoked).await?;
            Ok((LeakAction::Revoked, None))
        }
        Err(StoreError::Refused { message, .. }) => Ok((LeakAction::Flagged, Some(message))),
        Err(e) => Err(e),
    }
}

/// Stops a rotation's replaced secret that was found in public, if it
/// still works.
pub(super) async fn stop_leaked_replaced_secret(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    id: &str,
) -> StoreResult<LeakAction> {
    match end_grace(conn, dialect, account, actor, id).await {
        Ok(_) => Ok(LeakAction::GraceEnded),
        Err(StoreError::Conflict { .. }) => Ok(LeakAction::None),
        Err(e) => Err(e),
    }
}

/// Deletes for good. The caller must repeat the key's name; request logs and
/// audit history stay.
pub(super) async fn delete(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    deletion: KeyDeletion,
) -> StoreResult<()> {
    let key = locked_key(conn, dialect, account, &deletion.key_id).await?;
    if deletion.confirm_name != key.name {
        return Err(StoreError::Invalid {
            field: "confirm_name",
            message: "must repeat the key's name exactly; deleting cannot be undone".into(),
        });
    }
    check_removable(conn, dialect, account, &key, deletion.force, "delete").await?;
    sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(&key.id)
        .execute(&mut *conn)
        .await?;
    let before = json!({"name": key.name, "hint": key.hint, "kind": key.kind.as_str(), "environment": key.environment});
    audit::append(
        conn,
        account,
        actor,
        "key.deleted",
        "key",
        &key.id,
        Some(before),
        None,
    )
    .await
}

/// The rules that keep removal safe:
/// - a workspace keeps at least one active `ingest` key (seeds 000, 001),
///   whatever `force` says, because without one nothing can send data;
/// - a key an integration still uses is refused unless `force`, naming the
///   integrations so the user can move them first (seeds 000, 002).
async fn check_removable(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    key: &ApiKey,
    force: bool,
    verb: &str,
) -> StoreResult<()> {
    if key.kind == KeyKind::Ingest && key.status == KeyStatus::Active {
        // Locking the workspace row serialises concurrent removals of its
        // last two ingest keys on PostgreSQL; SQLite has one writer anyway.
        sqlx::query(&format!(
            "SELECT id FROM workspaces WHERE account_id = $1 AND id = $2 {}",
            dialect.row_lock("FOR UPDATE")
        ))
        .bind(account)
        .bind(&key.workspace_id)
        .fetch_optional(&mut *conn)
        .await?;
        if other_active_ingest_keys(conn, account, key).await? == 0 {
            return Err(StoreError::Refused {
                code: "last_ingest_key",
                message: format!(
                    "this is the workspace's last active ingest key; create a new set of credentials before you {verb} it"
                ),
            });
        }
    }
    let users = integrations::using_key(conn, account, &key.id).await?;
    if !users.is_empty() && !force {
        let names: Vec<String> = users.iter().map(|i| format!("{:?}", i.name)).collect();
        return Err(StoreError::Refused {
            code: "key_in_use",
            message: format!(
                "integrations still use this key: {}; move them to another key first, or pass force",
                names.join(", ")
            ),
        });
    }
    Ok(())
}

async fn other_active_ingest_keys(
    conn: &mut AnyConnection,
    account: &str,
    key: &ApiKey,
) -> StoreResult<i64> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND workspace_id = $2 AND id <> $3 \
         AND kind = $4 AND status = $5 AND (expires_at IS NULL OR expires_at > $6)",
    )
    .bind(account)
    .bind(&key.workspace_id)
    .bind(&key.id)
    .bind(KeyKind::Ingest.as_str())
    .bind(KeyStatus::Active.as_str())
    .bind(now_ms())
    .fetch_one(conn)
    .await?;
    Ok(count)
}

async fn reread(conn: &mut AnyConnection, account: &str, id: &str) -> StoreResult<ApiKey> {
    keys::find(conn, account, id, "")
        .await?
        .ok_or_else(|| StoreError::not_found("key"))
}
