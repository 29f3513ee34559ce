//! Integrations: which key each consumer of a workspace's credentials uses.

use super::decode::{column, parsed};
use super::{Dialect, audit, conflict, keys, workspaces, write_error};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use keyward_core::{IntegrationKind, KeyStatus};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const SELECT: &str = "SELECT id, account_id, workspace_id, name, kind, key_id, created_at, updated_at FROM integrations";

fn from_row(row: &AnyRow) -> StoreResult<Integration> {
    Ok(Integration {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        workspace_id: column(row, "workspace_id")?,
        name: column(row, "name")?,
        kind: parsed(row, "kind", IntegrationKind::parse)?,
        key_id: column(row, "key_id")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
) -> StoreResult<Vec<Integration>> {
    workspaces::require(conn, account, workspace, None).await?;
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE account_id = $1 AND workspace_id = $2 ORDER BY id"
    ))
    .bind(account)
    .bind(workspace)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn find(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
) -> StoreResult<Integration> {
    let row = sqlx::query(&format!("{SELECT} WHERE account_id = $1 AND id = $2"))
        .bind(account)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| StoreError::not_found("integration"))
}

/// The integrations that name this key, for the refusal message.
pub(super) async fn using_key(
    conn: &mut AnyConnection,
    account: &str,
    key_id: &str,
) -> StoreResult<Vec<Integration>> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE account_id = $1 AND key_id = $2 ORDER BY id"
    ))
    .bind(account)
    .bind(key_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The key must be a live key of the same workspace, of a kind the
/// integration can use.
async fn require_usable_key(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    workspace: &str,
    kind: IntegrationKind,
    key_id: &str,
) -> StoreResult<()> {
    let key = keys::find(conn, account, key_id, dialect.row_lock("FOR SHARE OF k"))
        .await?
        .filter(|k| k.workspace_id == workspace)
        .ok_or(StoreError::NotFound {
            what: "key in this workspace",
            field: Some("key_id"),
        })?;
    if key.status == KeyStatus::Revoked {
        return Err(StoreError::Invalid {
            field: "key_id",
            message: "the key is revoked".into(),
        });
    }
    if !kind.accepts(key.kind) {
        return Err(StoreError::Invalid {
            field: "key_id",
            message: format!(
                "a {} integration cannot use a {} key",
                kind.as_str(),
                key.kind.as_str()
            ),
        });
    }
    Ok(())
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    new: NewIntegration,
) -> StoreResult<Integration> {
    workspaces::require(conn, account, &new.workspace_id, None).await?;
    require_usable_key(
        conn,
        dialect,
        account,
        &new.workspace_id,
        new.kind,
        &new.key_id,
    )
    .await?;
    let now = now_ms();
    let integration = Integration {
        id: new_id("int"),
        account_id: account.to_owned(),
        workspace_id: new.workspace_id,
        name: new.name,
        kind: new.kind,
        key_id: Some(new.key_id),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO integrations (id, account_id, workspace_id, name, kind, key_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&integration.id)
    .bind(account)
    .bind(&integration.workspace_id)
    .bind(&integration.name)
    .bind(integration.kind.as_str())
    .bind(&integration.key_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        write_error(
            e,
            || conflict("name", "the workspace already has an integration with this name"),
            || StoreError::not_found("workspace"),
        )
    })?;
    let after = json!({"name": integration.name, "kind": integration.kind.as_str(), "key_id": integration.key_id});
    audit::append(
        conn,
        account,
        actor,
        "integration.created",
        "integration",
        &integration.id,
        None,
        Some(after),
    )
    .await?;
    Ok(integration)
}

/// Renames, or moves the integration to another key (seed 002: replace the
/// key in the integration's settings, then retire the old one).
pub(super) async fn update(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    actor: &Actor,
    id: &str,
    patch: IntegrationPatch,
) -> StoreResult<Integration> {
    let before = find(conn, account, id).await?;
    if let Some(key_id) = &patch.key_id {
        require_usable_key(
            conn,
            dialect,
            account,
            &before.workspace_id,
            before.kind,
            key_id,
        )
        .await?;
    }
    let name = patch.name.unwrap_or_else(|| before.name.clone());
    let key_id = patch.key_id.or_else(|| before.key_id.clone());
    sqlx::query("UPDATE integrations SET name = $3, key_id = $4, updated_at = $5 WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .bind(&name)
        .bind(&key_id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            write_error(
                e,
                || conflict("name", "the workspace already has an integration with this name"),
                || StoreError::not_found("key"),
            )
        })?;
    let old = json!({"name": before.name, "key_id": before.key_id});
    audit::append(
        conn,
        account,
        actor,
        "integration.updated",
        "integration",
        id,
        Some(old),
        Some(json!({"name": name, "key_id": key_id})),
    )
    .await?;
    find(conn, account, id).await
}

pub(super) async fn delete(
    conn: &mut AnyConnection,
    account: &str,
    actor: &Actor,
    id: &str,
) -> StoreResult<()> {
    let before = find(conn, account, id).await?;
    sqlx::query("DELETE FROM integrations WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let old = json!({"name": before.name, "kind": before.kind.as_str(), "key_id": before.key_id});
    audit::append(
        conn,
        account,
        actor,
        "integration.deleted",
        "integration",
        id,
        Some(old),
        None,
    )
    .await
}
