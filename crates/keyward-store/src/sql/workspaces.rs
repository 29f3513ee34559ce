//! Workspaces and their environments.

use super::decode::column;
use super::{PageWindow, conflict, write_error};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const WORKSPACE_COLUMNS: &str = "id, account_id, name, created_at";
const ENVIRONMENT_COLUMNS: &str = "id, workspace_id, name, tag, created_at";

/// Fails with NotFound on `workspace` (naming `field` of the request, if
/// given) unless the account has this workspace.
pub(super) async fn require(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
    field: Option<&'static str>,
) -> StoreResult<()> {
    let row = sqlx::query("SELECT id FROM workspaces WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound {
            what: "workspace",
            field,
        }),
    }
}

pub(super) async fn create(
    conn: &mut AnyConnection,
    account: &str,
    new: NewWorkspace,
) -> StoreResult<WorkspaceWithEnvironments> {
    let workspace = Workspace {
        id: new_id("ws"),
        account_id: account.to_owned(),
        name: new.name,
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO workspaces (id, account_id, name, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&workspace.id)
    .bind(account)
    .bind(&workspace.name)
    .bind(workspace.created_at)
    .execute(&mut *conn)
    .await?;
    let mut environments = Vec::with_capacity(new.environments.len());
    for (name, tag) in &new.environments {
        environments.push(insert_environment(conn, account, &workspace.id, name, tag).await?);
    }
    Ok(WorkspaceWithEnvironments {
        workspace,
        environments,
        primary_key: None,
    })
}

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    window: PageWindow<'_>,
) -> StoreResult<Page<Workspace>> {
    let rows = sqlx::query(&format!(
        "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE account_id = $1 \
         AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(account)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let workspaces = rows
        .iter()
        .map(workspace_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(window.into_page(workspaces, |w: &Workspace| &w.id))
}

pub(super) async fn find(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
) -> StoreResult<Option<Workspace>> {
    let row = sqlx::query(&format!(
        "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE account_id = $1 AND id = $2"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(workspace_from_row).transpose()
}

pub(super) async fn rename(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
    name: &str,
) -> StoreResult<Workspace> {
    let row = sqlx::query(&format!(
        "UPDATE workspaces SET name = $3 WHERE account_id = $1 AND id = $2 RETURNING {WORKSPACE_COLUMNS}"
    ))
    .bind(account)
    .bind(id)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => workspace_from_row(&row),
        None => Err(StoreError::not_found("workspace")),
    }
}

/// Deletes the workspace; its environments, keys and allowlist grants go
/// with it (`ON DELETE CASCADE`).
pub(super) async fn delete(conn: &mut AnyConnection, account: &str, id: &str) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM workspaces WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .execute(conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::not_found("workspace"));
    }
    Ok(())
}

pub(super) async fn list_environments(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
) -> StoreResult<Vec<Environment>> {
    let rows = sqlx::query(&format!(
        "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE account_id = $1 AND workspace_id = $2 ORDER BY id"
    ))
    .bind(account)
    .bind(workspace)
    .fetch_all(conn)
    .await?;
    rows.iter().map(environment_from_row).collect()
}

/// Adds an environment to a workspace the caller has checked is the
/// account's. Conflict on `name` or `tag` when either is taken.
pub(super) async fn insert_environment(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
    name: &str,
    tag: &str,
) -> StoreResult<Environment> {
    for (field, value) in [("name", name), ("tag", tag)] {
        if environment_column_taken(conn, account, workspace, field, value).await? {
            return Err(conflict(
                field,
                format!("the workspace already has an environment with {field} {value:?}"),
            ));
        }
    }
    let environment = Environment {
        id: new_id("env"),
        workspace_id: workspace.to_owned(),
        name: name.to_owned(),
        tag: tag.to_owned(),
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO environments (id, account_id, workspace_id, name, tag, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&environment.id)
    .bind(account)
    .bind(workspace)
    .bind(name)
    .bind(tag)
    .bind(environment.created_at)
    .execute(conn)
    .await
    .map_err(|e| {
        write_error(
            e,
            || {
                conflict(
                    "name",
                    "the workspace already has an environment with this name or tag",
                )
            },
            || StoreError::not_found("workspace"),
        )
    })?;
    Ok(environment)
}

/// Whether an environment of the workspace has `value` in `field`, which is
/// one of our own column names (`name`, `tag`), never input.
async fn environment_column_taken(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
    field: &'static str,
    value: &str,
) -> StoreResult<bool> {
    let row = sqlx::query(&format!(
        "SELECT id FROM environments WHERE account_id = $1 AND workspace_id = $2 AND {field} = $3"
    ))
    .bind(account)
    .bind(workspace)
    .bind(value)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// The id of the workspace's environment of this name.
pub(super) async fn environment_id(
    conn: &mut AnyConnection,
    account: &str,
    workspace: &str,
    name: &str,
) -> StoreResult<Option<String>> {
    let row = sqlx::query(
        "SELECT id FROM environments WHERE account_id = $1 AND workspace_id = $2 AND name = $3",
    )
    .bind(account)
    .bind(workspace)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.map(|r| column(&r, "id")).transpose()
}

fn workspace_from_row(row: &AnyRow) -> StoreResult<Workspace> {
    Ok(Workspace {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        name: column(row, "name")?,
        created_at: column(row, "created_at")?,
    })
}

fn environment_from_row(row: &AnyRow) -> StoreResult<Environment> {
    Ok(Environment {
        id: column(row, "id")?,
        workspace_id: column(row, "workspace_id")?,
        name: column(row, "name")?,
        tag: column(row, "tag")?,
        created_at: column(row, "created_at")?,
    })
}
