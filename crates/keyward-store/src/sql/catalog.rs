//! Each account's catalog of the permissions its keys may carry.

use super::decode::{column, narrowed, parsed};
use super::{Dialect, conflict, placeholders, write_error};
use crate::error::{StoreError, StoreResult};
use crate::ids::now_ms;
use crate::records::*;
use keyward_core::PermissionName;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::collections::BTreeSet;

const PERMISSION_COLUMNS: &str = "name, description, created_at";

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
) -> StoreResult<Vec<CatalogPermission>> {
    let rows = sqlx::query(&format!(
        "SELECT {PERMISSION_COLUMNS} FROM permissions WHERE account_id = $1 ORDER BY name"
    ))
    .bind(account)
    .fetch_all(conn)
    .await?;
    rows.iter().map(permission_from_row).collect()
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
    description: Option<&str>,
) -> StoreResult<CatalogPermission> {
    let exists = || {
        conflict(
            "name",
            format!("the catalog already has the permission {name}"),
        )
    };
    // DO NOTHING turns the uniqueness check and the insert into one step.
    let row = sqlx::query(&format!(
        "INSERT INTO permissions (account_id, name, description, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id, name) DO NOTHING RETURNING {PERMISSION_COLUMNS}"
    ))
    .bind(account)
    .bind(name)
    .bind(description)
    .bind(now_ms())
    .fetch_optional(conn)
    .await
    .map_err(|e| write_error(e, exists, || StoreError::not_found("account")))?;
    match row {
        Some(row) => permission_from_row(&row),
        None => Err(exists()),
    }
}

/// Deletes a permission no key holds; InUse naming how many keys do.
pub(super) async fn delete_unused(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
) -> StoreResult<()> {
    // Delete first, count second: on PostgreSQL the delete waits for any
    // transaction that is adding a key with this permission (it holds the
    // row FOR SHARE, see `require_all`), so the count then sees that key.
    // An InUse error returns before commit, which rolls the delete back.
    let deleted = sqlx::query("DELETE FROM permissions WHERE account_id = $1 AND name = $2")
        .bind(account)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::not_found("permission"));
    }
    let holders = count_keys_holding(conn, account, name).await?;
    if holders > 0 {
        return Err(StoreError::InUse {
            message: format!(
                "permission {name} is held by {holders} key{}; remove it from them first",
                if holders == 1 { "" } else { "s" }
            ),
        });
    }
    Ok(())
}

/// How many of the account's keys hold the permission. Keys store their
/// permissions as a JSON array of names, and a name's characters
/// (`[a-z0-9_.:-]`) need no JSON escaping, so `"name"` occurs in the text
/// exactly when the array holds the name; `_` is escaped as it is a LIKE
/// wildcard.
async fn count_keys_holding(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
) -> StoreResult<u64> {
    let pattern = format!(
        "%\"{}\"%",
        name.replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%")
    );
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM api_keys WHERE account_id = $1 AND permissions LIKE $2 ESCAPE '\\'",
    )
    .bind(account)
    .bind(pattern)
    .fetch_one(conn)
    .await?;
    narrowed(&row, "n")
}

/// Fails with Invalid on `permissions`, naming those missing from the
/// account's catalog, unless every one of `names` is in it. On PostgreSQL
/// the catalog rows stay locked FOR SHARE until the transaction ends, so
/// they cannot be deleted from under the key being written.
pub(super) async fn require_all(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    names: &[PermissionName],
) -> StoreResult<()> {
    if names.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT name FROM permissions WHERE account_id = $1 AND name IN ({}) {}",
        placeholders(2, names.len()),
        dialect.row_lock("FOR SHARE"),
    );
    let mut query = sqlx::query(&sql).bind(account);
    for name in names {
        query = query.bind(name.as_str());
    }
    let rows = query.fetch_all(conn).await?;
    let found = rows
        .iter()
        .map(|row| column::<String>(row, "name"))
        .collect::<StoreResult<BTreeSet<_>>>()?;
    let missing: Vec<&str> = names
        .iter()
        .map(PermissionName::as_str)
        .filter(|n| !found.contains(*n))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::Invalid {
        field: "permissions",
        message: format!(
            "not in the account's permission catalog: {}",
            missing.join(", ")
        ),
    })
}

fn permission_from_row(row: &AnyRow) -> StoreResult<CatalogPermission> {
    Ok(CatalogPermission {
        name: parsed(row, "name", PermissionName::parse)?,
        description: column(row, "description")?,
        created_at: column(row, "created_at")?,
    })
}
