//! The account's IP allowlist: CIDR ranges, each granted to some of the
//! account's workspaces.

use super::decode::{column, parsed};
use super::{not_found_in, workspaces, write_error};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use ipnet::IpNet;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
) -> StoreResult<Vec<AllowlistEntry>> {
    let entry_rows = sqlx::query(
        "SELECT id, account_id, cidr, description, created_at FROM ip_allowlist \
         WHERE account_id = $1 ORDER BY id",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    let mut grants = grants_by_entry(conn, account).await?;
    entry_rows
        .iter()
        .map(|row| {
            let id: String = column(row, "id")?;
            let workspace_ids = grants.remove(&id).unwrap_or_default();
            entry_from_row(row, workspace_ids)
        })
        .collect()
}

/// The account's grants: entry id → its workspace ids, sorted.
async fn grants_by_entry(
    conn: &mut AnyConnection,
    account: &str,
) -> StoreResult<BTreeMap<String, Vec<String>>> {
    let rows = sqlx::query(
        "SELECT entry_id, workspace_id FROM ip_allowlist_grants WHERE account_id = $1 \
         ORDER BY entry_id, workspace_id",
    )
    .bind(account)
    .fetch_all(conn)
    .await?;
    let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in &rows {
        grants
            .entry(column(row, "entry_id")?)
            .or_default()
            .push(column(row, "workspace_id")?);
    }
    Ok(grants)
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    account: &str,
    new: NewAllowlistEntry,
) -> StoreResult<AllowlistEntry> {
    let mut workspace_ids = new.workspace_ids;
    workspace_ids.sort();
    workspace_ids.dedup();
    for workspace in &workspace_ids {
        workspaces::require(conn, account, workspace, Some("workspace_ids")).await?;
    }
    let entry = AllowlistEntry {
        id: new_id("ipa"),
        account_id: account.to_owned(),
        cidr: new.cidr,
        description: new.description,
        workspace_ids,
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO ip_allowlist (id, account_id, cidr, description, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&entry.id)
    .bind(account)
    .bind(entry.cidr.to_string())
    .bind(&entry.description)
    .bind(entry.created_at)
    .execute(&mut *conn)
    .await?;
    for workspace in &entry.workspace_ids {
        grant(conn, account, &entry.id, workspace).await?;
    }
    Ok(entry)
}

async fn grant(
    conn: &mut AnyConnection,
    account: &str,
    entry: &str,
    workspace: &str,
) -> StoreResult<()> {
    let workspace_gone = || not_found_in("workspace", "workspace_ids");
    sqlx::query(
        "INSERT INTO ip_allowlist_grants (account_id, entry_id, workspace_id) VALUES ($1, $2, $3)",
    )
    .bind(account)
    .bind(entry)
    .bind(workspace)
    .execute(conn)
    .await
    // Workspace ids are de-duplicated, so only a workspace deleted since
    // the check can make this fail.
    .map_err(|e| write_error(e, workspace_gone, workspace_gone))?;
    Ok(())
}

pub(super) async fn delete(conn: &mut AnyConnection, account: &str, id: &str) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM ip_allowlist WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .execute(conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::not_found("allowlist entry"));
    }
    Ok(())
}

/// Every range granted to the workspace, sorted by their text form.
pub(super) async fn workspace_ranges(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
) -> StoreResult<Vec<IpNet>> {
    let rows = sqlx::query(
        "SELECT a.cidr AS cidr FROM ip_allowlist_grants g \
         JOIN ip_allowlist a ON a.account_id = g.account_id AND a.id = g.entry_id \
         WHERE g.account_id = $1 AND g.workspace_id = $2 ORDER BY a.cidr",
    )
    .bind(account)
    .bind(workspace)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| parsed(row, "cidr", str::parse::<IpNet>))
        .collect()
}

fn entry_from_row(row: &AnyRow, workspace_ids: Vec<String>) -> StoreResult<AllowlistEntry> {
    Ok(AllowlistEntry {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        cidr: parsed(row, "cidr", str::parse::<IpNet>)?,
        description: column(row, "description")?,
        workspace_ids,
        created_at: column(row, "created_at")?,
    })
}
