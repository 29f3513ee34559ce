//! Management tokens: the credentials of the management API, each acting
//! for one member.

use super::accounts::find_member;
use super::decode::{column, name_list, names_to_json};
use super::{PageWindow, conflict, not_found_in, write_error};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use keyward_core::AccountPermission;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

const TOKEN_COLUMNS: &str =
    "id, account_id, member_id, name, hint, permissions, created_at, expires_at, last_used_at";

pub(super) async fn create(
    conn: &mut AnyConnection,
    account: &str,
    new: NewManagementToken,
) -> StoreResult<ManagementToken> {
    let member_missing = || not_found_in("member", "member_id");
    if find_member(conn, account, &new.member_id).await?.is_none() {
        return Err(member_missing());
    }
    let mut permissions = new.permissions;
    permissions.sort();
    permissions.dedup();
    let token = ManagementToken {
        id: new_id("tok"),
        account_id: account.to_owned(),
        member_id: new.member_id,
        name: new.name,
        hint: new.hint,
        permissions,
        created_at: now_ms(),
        expires_at: new.expires_at,
        last_used_at: None,
    };
    sqlx::query(
        "INSERT INTO management_tokens (id, account_id, member_id, name, hash, hint, permissions, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&token.id)
    .bind(account)
    .bind(&token.member_id)
    .bind(&token.name)
    .bind(&new.hash_hex)
    .bind(&token.hint)
    .bind(names_to_json(
        token.permissions.iter().map(|p| p.as_str()),
        "permissions",
    )?)
    .bind(token.created_at)
    .bind(token.expires_at)
    .execute(conn)
    .await
    .map_err(|e| {
        // The only unique rule is the hash of a fresh random token.
        write_error(
            e,
            || conflict("token", "a token with this secret exists"),
            member_missing,
        )
    })?;
    Ok(token)
}

pub(super) async fn list(
    conn: &mut AnyConnection,
    account: &str,
    member_id: Option<&str>,
    window: PageWindow<'_>,
) -> StoreResult<Page<ManagementToken>> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM management_tokens WHERE account_id = $1 \
         AND ($2 IS NULL OR member_id = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(account)
    .bind(member_id)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let tokens = rows
        .iter()
        .map(token_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(window.into_page(tokens, |t: &ManagementToken| &t.id))
}

pub(super) async fn find(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
) -> StoreResult<Option<ManagementToken>> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM management_tokens WHERE account_id = $1 AND id = $2"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn delete(conn: &mut AnyConnection, account: &str, id: &str) -> StoreResult<()> {
    let deleted = sqlx::query("DELETE FROM management_tokens WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .execute(conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::not_found("management token"));
    }
    Ok(())
}

/// The token with this hash and its member. Not scoped by account: this is
/// how a request's account is found; the member is then read within the
/// token's own account.
pub(super) async fn record_usage(
    conn: &mut AnyConnection,
    usages: &[TokenUsage],
) -> StoreResult<()> {
    // In id order, as for keys: two batches on PostgreSQL then lock rows in
    // the same order and cannot deadlock.
    let mut ordered: Vec<&TokenUsage> = usages.iter().collect();
    ordered.sort_by(|a, b| a.token_id.cmp(&b.token_id));
    for usage in ordered {
        sqlx::query(
            "UPDATE management_tokens SET last_used_at = $2 WHERE id = $1 AND account_id = $3 \
             AND (last_used_at IS NULL OR last_used_at < $2)",
        )
        .bind(&usage.token_id)
        .bind(usage.at)
        .bind(&usage.account_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(super) async fn find_principal(
    conn: &mut AnyConnection,
    hash_hex: &str,
) -> StoreResult<Option<TokenPrincipal>> {
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM management_tokens WHERE hash = $1"
    ))
    .bind(hash_hex)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(token) = row.as_ref().map(token_from_row).transpose()? else {
        return Ok(None);
    };
    // Tokens are deleted with their member; a missing member means the
    // member was removed between the two reads.
    let member = find_member(conn, &token.account_id, &token.member_id).await?;
    Ok(member.map(|member| TokenPrincipal { token, member }))
}

fn token_from_row(row: &AnyRow) -> StoreResult<ManagementToken> {
    Ok(ManagementToken {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        member_id: column(row, "member_id")?,
        name: column(row, "name")?,
        hint: column(row, "hint")?,
        permissions: name_list(row, "permissions", AccountPermission::parse)?,
        created_at: column(row, "created_at")?,
        expires_at: column(row, "expires_at")?,
        last_used_at: column(row, "last_used_at")?,
    })
}
