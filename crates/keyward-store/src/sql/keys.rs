//! API keys.

use super::decode::{column, json, names_to_json, narrowed_opt, parsed, to_json};
use super::{
    Dialect, PageWindow, allowlist, audit, catalog, conflict, credits, not_found_in, workspaces,
    write_error,
};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use keyward_core::{KeyKind, KeyStatus, PermissionName, RateLimitPolicy};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// Keys with their environment's name and credits. The join is on `account_id` too, so
/// even a key row pointing elsewhere could not pull in another account's
/// environment.
const KEY_SELECT: &str = concat!(
    "SELECT k.id AS id, k.account_id AS account_id, \
     k.workspace_id AS workspace_id, e.name AS environment, k.kind AS kind, k.name AS name, \
     k.hint AS hint, k.status AS status, k.permissions AS permissions, \
     k.customer_id AS customer_id, k.rate_limit_limit AS rate_limit_limit, \
     k.rate_limit_window AS rate_limit_window, k.allowed_ips AS allowed_ips, \
     k.expires_at AS expires_at, k.meta AS meta, k.created_at AS created_at, \
     k.created_by AS created_by, k.updated_at AS updated_at, k.last_used_at AS last_used_at, \
     k.last_used_ip AS last_used_ip, k.allowed_origins AS allowed_origins, \
     k.public_value AS public_value, k.previous_hint AS previous_hint, \
     k.previous_expires_at AS previous_expires_at, \
     k.previous_last_used_at AS previous_last_used_at, k.leaked_at AS leaked_at, \
     k.hash AS hash, ",
    credits::credit_columns!(),
    " FROM api_keys k JOIN environments e ON e.account_id = k.account_id AND e.id = k.environment_id \
     LEFT JOIN key_credits c ON c.account_id = k.account_id AND c.key_id = k.id"
);

pub(super) async fn create(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    new: NewKey,
) -> StoreResult<ApiKey> {
    workspaces::require(conn, account, &new.workspace_id, Some("workspace_id")).await?;
    let environment_id =
        workspaces::environment_id(conn, account, &new.workspace_id, &new.environment)
            .await?
            .ok_or_else(|| not_found_in("environment", "environment"))?;
    let permissions = normalized(new.permissions);
    catalog::require_all(conn, dialect, account, &permissions).await?;
    require_name_free(conn, account, &new.workspace_id, &new.name).await?;

    let now = now_ms();
    let key = ApiKey {
        id: new_id("key"),
        account_id: account.to_owned(),
        workspace_id: new.workspace_id,
        environment: new.environment,
        kind: new.kind,
        name: new.name,
        hint: new.hint,
        status: KeyStatus::Active,
        permissions,
        customer_id: new.customer_id,
        rate_limit: new.rate_limit,
        allowed_ips: new.allowed_ips,
        expires_at: new.expires_at,
        meta: new.meta,
        created_at: now,
        created_by: new.created_by,
        updated_at: now,
        last_used_at: None,
        last_used_ip: None,
        allowed_origins: new.allowed_origins,
        public_value: new.public_value,
        rotation: None,
        leaked_at: None,
        credits: new.credits.map(|setting| setting.starting_at(now)),
    };
    let encoded = EncodedColumns::of(&key)?;
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, workspace_id, environment_id, kind, name, hash, hint, \
         status, permissions, customer_id, rate_limit_limit, rate_limit_window, allowed_ips, \
         expires_at, meta, created_at, created_by, updated_at, allowed_origins, public_value) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, $21)",
    )
    .bind(&key.id)
    .bind(account)
    .bind(&key.workspace_id)
    .bind(environment_id)
    .bind(key.kind.as_str())
    .bind(&key.name)
    .bind(&new.hash_hex)
    .bind(&key.hint)
    .bind(key.status.as_str())
    .bind(encoded.permissions)
    .bind(&key.customer_id)
    .bind(encoded.rate_limit_limit)
    .bind(encoded.rate_limit_window)
    .bind(encoded.allowed_ips)
    .bind(key.expires_at)
    .bind(encoded.meta)
    .bind(key.created_at)
    .bind(&key.created_by)
    .bind(key.updated_at)
    .bind(encoded.allowed_origins)
    .bind(&key.public_value)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        // The name was checked above, and the hash is a digest of a fresh
        // random secret: a violation here is a concurrent create.
        write_error(
            e,
            || conflict("name", "the workspace already has a key with this name (or secret)"),
            || StoreError::not_found("workspace"),
        )
    })?;
    if new.credits.is_some() {
        credits::set(conn, account, &key.id, new.credits, now).await?;
    }
    Ok(key)
}

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    filter: &KeyFilter,
    window: PageWindow<'_>,
) -> StoreResult<Page<ApiKey>> {
    let rows = sqlx::query(&format!(
        "{KEY_SELECT} WHERE k.account_id = $1 AND ($2 IS NULL OR k.workspace_id = $2) \
         AND ($3 IS NULL OR e.name = $3) AND ($4 IS NULL OR k.status = $4) \
         AND ($5 IS NULL OR k.kind = $5) AND ($6 IS NULL OR k.id > $6) ORDER BY k.id LIMIT $7"
    ))
    .bind(account)
    .bind(filter.workspace_id.as_deref())
    .bind(filter.environment.as_deref())
    .bind(filter.status.map(KeyStatus::as_str))
    .bind(filter.kind.map(KeyKind::as_str))
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let keys = rows.iter().map(key_from_row).collect::<StoreResult<_>>()?;
    Ok(window.into_page(keys, |k: &ApiKey| &k.id))
}

/// The account's key with this id; `lock` is a row-lock clause from
/// [`Dialect::row_lock`] or empty.
pub(super) async fn find(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
    lock: &str,
) -> StoreResult<Option<ApiKey>> {
    let row = sqlx::query(&format!(
        "{KEY_SELECT} WHERE k.account_id = $1 AND k.id = $2 {lock}"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn update(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    id: &str,
    patch: KeyPatch,
) -> StoreResult<ApiKey> {
    // Locked on PostgreSQL: the whole row is written back below, and a
    // concurrent update of another field must not be lost.
    let mut key = find(conn, account, id, dialect.row_lock("FOR UPDATE OF k"))
        .await?
        .ok_or_else(|| StoreError::not_found("key"))?;
    let patch = KeyPatch {
        permissions: patch.permissions.map(normalized),
        ..patch
    };
    if let Some(name) = patch.name.as_deref().filter(|name| *name != key.name) {
        require_name_free(conn, account, &key.workspace_id, name).await?;
    }
    if let Some(permissions) = &patch.permissions {
        catalog::require_all(conn, dialect, account, permissions).await?;
    }
    let now = now_ms();
    let credits_setting = patch.credits;
    apply_patch(&mut key, patch, now);

    let encoded = EncodedColumns::of(&key)?;
    sqlx::query(
        "UPDATE api_keys SET name = $3, permissions = $4, customer_id = $5, rate_limit_limit = $6, \
         rate_limit_window = $7, allowed_ips = $8, expires_at = $9, meta = $10, updated_at = $11, \
         allowed_origins = $12 WHERE account_id = $1 AND id = $2",
    )
    .bind(account)
    .bind(id)
    .bind(&key.name)
    .bind(encoded.permissions)
    .bind(&key.customer_id)
    .bind(encoded.rate_limit_limit)
    .bind(encoded.rate_limit_window)
    .bind(encoded.allowed_ips)
    .bind(key.expires_at)
    .bind(encoded.meta)
    .bind(key.updated_at)
    .bind(encoded.allowed_origins)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        write_error(
            e,
            || conflict("name", "the workspace already has a key with this name"),
            || StoreError::not_found("key"),
        )
    })?;
    if let Some(setting) = credits_setting {
        credits::set(conn, account, id, setting, now).await?;
    }
    Ok(key)
}

/// Applies the set fields of a patch (permissions already normalised).
fn apply_patch(key: &mut ApiKey, patch: KeyPatch, now: i64) {
    let KeyPatch {
        name,
        permissions,
        customer_id,
        rate_limit,
        allowed_ips,
        expires_at,
        meta,
        allowed_origins,
        credits,
    } = patch;
    if let Some(name) = name {
        key.name = name;
    }
    if let Some(permissions) = permissions {
        key.permissions = permissions;
    }
    if let Some(customer_id) = customer_id {
        key.customer_id = customer_id;
    }
    if let Some(rate_limit) = rate_limit {
        key.rate_limit = rate_limit;
    }
    if let Some(allowed_ips) = allowed_ips {
        key.allowed_ips = allowed_ips;
    }
    if let Some(expires_at) = expires_at {
        key.expires_at = expires_at;
    }
    if let Some(meta) = meta {
        key.meta = meta;
    }
    if let Some(allowed_origins) = allowed_origins {
        key.allowed_origins = allowed_origins;
    }
    if let Some(credits) = credits {
        key.credits = credits.map(|setting| setting.starting_at(now));
    }
    key.updated_at = now;
}

/// Sets the status and audits it (`key.enabled`, `key.disabled`,
/// `key.expired`, `key.revoked`). Callers lock the key row first (on
/// PostgreSQL), so that the audited previous status is the one replaced.
pub(super) async fn set_status(
    conn: &mut AnyConnection,
    account: &str,
    actor: &Actor,
    id: &str,
    status: KeyStatus,
) -> StoreResult<ApiKey> {
    let before = find(conn, account, id, "")
        .await?
        .ok_or_else(|| StoreError::not_found("key"))?;
    // One conditional statement, so that no concurrent change can slip
    // between checking "not revoked" and writing.
    let changed = sqlx::query(
        "UPDATE api_keys SET status = $3, updated_at = $4 \
         WHERE account_id = $1 AND id = $2 AND (status <> $5 OR $3 = $5)",
    )
    .bind(account)
    .bind(id)
    .bind(status.as_str())
    .bind(now_ms())
    .bind(KeyStatus::Revoked.as_str())
    .execute(&mut *conn)
    .await?;
    if changed.rows_affected() == 0 {
        return Err(conflict(
            "status",
            "the key is revoked, and a revoked key stays revoked",
        ));
    }
    let key = find(conn, account, id, "")
        .await?
        .ok_or_else(|| StoreError::not_found("key"))?;
    let action = match status {
        KeyStatus::Active => "key.enabled",
        KeyStatus::Inactive => "key.disabled",
        KeyStatus::Expired => "key.expired",
        KeyStatus::Revoked => "key.revoked",
    };
    audit::append(
        conn,
        account,
        actor,
        action,
        "key",
        id,
        Some(json!({"status": before.status.as_str()})),
        Some(json!({"status": key.status.as_str()})),
    )
    .await?;
    Ok(key)
}

/// The key whose current — or rotation-replaced — secret has this hash, and
/// its workspace's allowlist. Not scoped by account (the caller compares
/// it); the allowlist is read within the key's own account.
pub(super) async fn find_for_verification(
    conn: &mut AnyConnection,
    hash_hex: &str,
) -> StoreResult<Option<VerificationRecord>> {
    let row = sqlx::query(&format!(
        "{KEY_SELECT} WHERE k.hash = $1 OR k.previous_hash = $1"
    ))
    .bind(hash_hex)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let key = key_from_row(&row)?;
    let current_hash: String = column(&row, "hash")?;
    let replaced_secret_expires_at = match &key.rotation {
        Some(rotation) if current_hash != hash_hex => Some(rotation.expires_at),
        _ => None,
    };
    let workspace_allowlist =
        allowlist::workspace_ranges(conn, &key.account_id, &key.workspace_id).await?;
    Ok(Some(VerificationRecord {
        key,
        workspace_allowlist,
        replaced_secret_expires_at,
    }))
}

/// Moves each key's last use forward (never back), scoped by account like
/// every write; keys deleted since are matched by no row and so skipped.
pub(super) async fn record_usage(conn: &mut AnyConnection, usages: &[KeyUsage]) -> StoreResult<()> {
    // Rows are locked in id order, so that two batches on PostgreSQL cannot
    // deadlock by locking the same keys in opposite orders.
    let mut ordered: Vec<&KeyUsage> = usages.iter().collect();
    ordered.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    for usage in ordered {
        let query = if usage.replaced_secret {
            // A rotation-replaced secret: only its own last use moves.
            sqlx::query(
                "UPDATE api_keys SET previous_last_used_at = $2 WHERE id = $1 AND account_id = $3 \
                 AND (previous_last_used_at IS NULL OR previous_last_used_at < $2)",
            )
            .bind(&usage.key_id)
            .bind(usage.at)
        } else {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2, last_used_ip = $4 WHERE id = $1 \
                 AND account_id = $3 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(&usage.key_id)
            .bind(usage.at)
        };
        let query = query.bind(&usage.account_id);
        let query = if usage.replaced_secret {
            query
        } else {
            query.bind(usage.ip.as_deref())
        };
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Refuses a hash some key's current or replaced secret has, in any
/// account: one secret is one key. The message says no more than that.
pub(super) async fn require_secret_free(
    conn: &mut AnyConnection,
    hash_hex: &str,
) -> StoreResult<()> {
    let taken: Option<String> =
        sqlx::query_scalar("SELECT id FROM api_keys WHERE hash = $1 OR previous_hash = $1")
            .bind(hash_hex)
            .fetch_optional(conn)
            .await?;
    match taken {
        None => Ok(()),
        Some(_) => Err(conflict("hash", "a key with this secret already exists")),
    }
}

async fn require_name_free(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
    name: &str,
) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT id FROM api_keys WHERE account_id = $1 AND workspace_id = $2 AND name = $3",
    )
    .bind(account)
    .bind(workspace)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    match row {
        None => Ok(()),
        Some(_) => Err(conflict(
            "name",
            format!("the workspace already has a key named {name:?}"),
        )),
    }
}

/// Permissions as keys hold them: sorted, without duplicates.
fn normalized(mut permissions: Vec<PermissionName>) -> Vec<PermissionName> {
    permissions.sort();
    permissions.dedup();
    permissions
}

/// The key fields whose column form differs from the record's.
struct EncodedColumns {
    permissions: String,
    rate_limit_limit: Option<i64>,
    rate_limit_window: Option<i64>,
    allowed_ips: String,
    meta: String,
    allowed_origins: String,
}

impl EncodedColumns {
    fn of(key: &ApiKey) -> StoreResult<Self> {
        let allowed_ips: Vec<String> = key.allowed_ips.iter().map(ToString::to_string).collect();
        Ok(Self {
            permissions: names_to_json(
                key.permissions.iter().map(PermissionName::as_str),
                "permissions",
            )?,
            rate_limit_limit: key.rate_limit.map(|p| i64::from(p.limit)),
            rate_limit_window: key.rate_limit.map(|p| i64::from(p.window_seconds)),
            allowed_ips: to_json(&allowed_ips, "allowed_ips")?,
            meta: to_json(&key.meta, "meta")?,
            allowed_origins: to_json(&key.allowed_origins, "allowed_origins")?,
        })
    }
}

fn key_from_row(row: &AnyRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        workspace_id: column(row, "workspace_id")?,
        environment: column(row, "environment")?,
        kind: parsed(row, "kind", KeyKind::parse)?,
        name: column(row, "name")?,
        hint: column(row, "hint")?,
        status: parsed(row, "status", KeyStatus::parse)?,
        permissions: json(row, "permissions")?,
        customer_id: column(row, "customer_id")?,
        rate_limit: rate_limit_from_row(row)?,
        allowed_ips: json(row, "allowed_ips")?,
        expires_at: column(row, "expires_at")?,
        meta: json(row, "meta")?,
        created_at: column(row, "created_at")?,
        created_by: column(row, "created_by")?,
        updated_at: column(row, "updated_at")?,
        last_used_at: column(row, "last_used_at")?,
        last_used_ip: column(row, "last_used_ip")?,
        allowed_origins: json(row, "allowed_origins")?,
        public_value: column(row, "public_value")?,
        rotation: rotation_from_row(row)?,
        leaked_at: column(row, "leaked_at")?,
        credits: credits::from_row(row)?,
    })
}

/// The replaced secret's columns: all set after a rotation, all NULL before.
fn rotation_from_row(row: &AnyRow) -> StoreResult<Option<KeyRotation>> {
    let hint: Option<String> = column(row, "previous_hint")?;
    let expires_at: Option<i64> = column(row, "previous_expires_at")?;
    match (hint, expires_at) {
        (Some(previous_hint), Some(expires_at)) => Ok(Some(KeyRotation {
            previous_hint,
            expires_at,
            previous_last_used_at: column(row, "previous_last_used_at")?,
        })),
        (None, None) => Ok(None),
        _ => Err(StoreError::corrupt(
            "columns previous_hint, previous_expires_at: only one is set",
        )),
    }
}

/// The policy stored in two columns, both set or both NULL.
fn rate_limit_from_row(row: &AnyRow) -> StoreResult<Option<RateLimitPolicy>> {
    let limit = narrowed_opt::<u32>(row, "rate_limit_limit")?;
    let window = narrowed_opt::<u32>(row, "rate_limit_window")?;
    match (limit, window) {
        (Some(limit), Some(window_seconds)) => Ok(Some(RateLimitPolicy {
            limit,
            window_seconds,
        })),
        (None, None) => Ok(None),
        _ => Err(StoreError::corrupt(
            "columns rate_limit_limit, rate_limit_window: only one is set",
        )),
    }
}
