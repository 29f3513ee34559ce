//! Accounts, the users behind members, and members.

use super::decode::{column, name_list, names_to_json, narrowed, parsed};
use super::{Dialect, PageWindow, conflict, tokens, workspaces, write_error};
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use keyward_core::{AccountPermission, Role};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

pub(super) async fn count(conn: &mut AnyConnection) -> StoreResult<u64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
        .fetch_one(conn)
        .await?;
    narrowed(&row, "n")
}

pub(super) async fn list_ids(conn: &mut AnyConnection) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("SELECT id FROM accounts ORDER BY id")
        .fetch_all(conn)
        .await?;
    rows.iter().map(|row| column(row, "id")).collect()
}

/// The whole of [`crate::Store::bootstrap_account`], inside the caller's
/// transaction.
pub(super) async fn bootstrap(
    conn: &mut AnyConnection,
    new: NewAccount,
) -> StoreResult<Bootstrapped> {
    let account = insert_account(conn, &new.name).await?;
    let user_id = ensure_user(conn, &new.owner_email, Some(&new.owner_password_hash)).await?;
    // Owners hold every permission by their role; no explicit grants needed.
    let owner = insert_member(
        conn,
        &account.id,
        &user_id,
        &new.owner_email,
        Role::Owner,
        &[],
    )
    .await?;
    let workspace = workspaces::create(
        conn,
        &account.id,
        NewWorkspace {
            name: new.workspace_name,
            environments: new.environments,
            // Created by the caller, which audits it as the new owner.
            primary_key: None,
        },
    )
    .await?;
    let token = tokens::create(
        conn,
        &account.id,
        NewManagementToken {
            member_id: owner.id.clone(),
            name: new.token_name,
            hash_hex: new.token_hash_hex,
            hint: new.token_hint,
            permissions: AccountPermission::ALL.to_vec(),
            expires_at: None,
        },
    )
    .await?;
    Ok(Bootstrapped {
        account,
        owner,
        workspace,
        token,
    })
}

async fn insert_account(conn: &mut AnyConnection, name: &str) -> StoreResult<Account> {
    let account = Account {
        id: new_id("acct"),
        name: name.to_owned(),
        created_at: now_ms(),
    };
    sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&account.id)
        .bind(&account.name)
        .bind(account.created_at)
        .execute(conn)
        .await?;
    Ok(account)
}

/// The id of the user with this email, created (with this password hash, if
/// any) when there is none. An existing user is reused as they are: their
/// password is not replaced.
async fn ensure_user(
    conn: &mut AnyConnection,
    email: &str,
    password_hash: Option<&str>,
) -> StoreResult<String> {
    // DO NOTHING rather than a prior SELECT: a concurrent insert of the same
    // email then waits for, and yields to, the first instead of failing.
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(new_id("usr"))
    .bind(email)
    .bind(password_hash)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(conn)
        .await?;
    column(&row, "id")
}

/// Adds the user with this email (created without a password if new).
pub(super) async fn add_member(
    conn: &mut AnyConnection,
    account: &str,
    new: NewMember,
) -> StoreResult<Member> {
    let user_id = ensure_user(conn, &new.email, None).await?;
    let already = sqlx::query("SELECT id FROM members WHERE account_id = $1 AND user_id = $2")
        .bind(account)
        .bind(&user_id)
        .fetch_optional(&mut *conn)
        .await?;
    if already.is_some() {
        return Err(already_member(&new.email));
    }
    insert_member(
        conn,
        account,
        &user_id,
        &new.email,
        new.role,
        &new.permissions,
    )
    .await
}

fn already_member(email: &str) -> StoreError {
    conflict(
        "email",
        format!("{email} is already a member of this account"),
    )
}

async fn insert_member(
    conn: &mut AnyConnection,
    account: &str,
    user_id: &str,
    email: &str,
    role: Role,
    permissions: &[AccountPermission],
) -> StoreResult<Member> {
    let mut permissions = permissions.to_vec();
    permissions.sort();
    permissions.dedup();
    let member = Member {
        id: new_id("mem"),
        account_id: account.to_owned(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        role,
        permissions,
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO members (id, account_id, user_id, role, permissions, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&member.id)
    .bind(account)
    .bind(user_id)
    .bind(role.as_str())
    .bind(names_to_json(
        member.permissions.iter().map(|p| p.as_str()),
        "permissions",
    )?)
    .bind(member.created_at)
    .execute(conn)
    .await
    .map_err(|e| {
        write_error(
            e,
            || already_member(email),
            || StoreError::not_found("account"),
        )
    })?;
    Ok(member)
}

/// Changes a member's role and grants; see [`crate::Store::update_member`].
pub(super) async fn update_member(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    id: &str,
    patch: MemberPatch,
) -> StoreResult<(Member, Member)> {
    let owners = lock_owners(conn, dialect, account).await?;
    let before = locked_member(conn, dialect, account, id).await?;
    let role = patch.role.unwrap_or(before.role);
    if before.role == Role::Owner && role != Role::Owner {
        require_another_owner(&owners, id, "demote")?;
    }
    // Owners and admins hold every permission by their role; explicit
    // grants would lie dormant and come back on a later demotion.
    let permissions = match (role, patch.permissions) {
        (Role::Member, Some(permissions)) => permissions,
        (Role::Member, None) => before.permissions.clone(),
        (_, Some(permissions)) if !permissions.is_empty() => {
            return Err(StoreError::Invalid {
                field: "permissions",
                message:
                    "owners and admins hold every permission; grant permissions to members only"
                        .into(),
            });
        }
        (_, _) => Vec::new(),
    };
    let mut after = Member {
        role,
        permissions,
        ..before.clone()
    };
    after.permissions.sort();
    after.permissions.dedup();
    sqlx::query("UPDATE members SET role = $3, permissions = $4 WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .bind(role.as_str())
        .bind(names_to_json(
            after.permissions.iter().map(|p| p.as_str()),
            "permissions",
        )?)
        .execute(conn)
        .await?;
    Ok((before, after))
}

/// Removes a member (their tokens go by `ON DELETE CASCADE`); returns what
/// was removed.
pub(super) async fn delete_member(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    id: &str,
) -> StoreResult<Member> {
    let owners = lock_owners(conn, dialect, account).await?;
    let member = locked_member(conn, dialect, account, id).await?;
    if member.role == Role::Owner {
        require_another_owner(&owners, id, "remove")?;
    }
    sqlx::query("DELETE FROM members WHERE account_id = $1 AND id = $2")
        .bind(account)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(member)
}

/// The account's owners, locked on PostgreSQL before anything else is, in
/// id order. Two transactions that each demote or remove one of two owners
/// then run one after the other, and the second sees that only one owner is
/// left; locking in one order means they cannot deadlock. `FOR NO KEY
/// UPDATE` leaves alone the key-share locks of concurrent token inserts.
async fn lock_owners(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(&format!(
        "SELECT id FROM members WHERE account_id = $1 AND role = $2 ORDER BY id {}",
        dialect.row_lock("FOR NO KEY UPDATE")
    ))
    .bind(account)
    .bind(Role::Owner.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| column(row, "id")).collect()
}

async fn locked_member(
    conn: &mut AnyConnection,
    dialect: Dialect,
    account: &str,
    id: &str,
) -> StoreResult<Member> {
    let row = sqlx::query(&format!(
        "{MEMBER_SELECT} WHERE m.account_id = $1 AND m.id = $2 {}",
        dialect.row_lock("FOR NO KEY UPDATE OF m")
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref()
        .map(member_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::not_found("member"))
}

fn require_another_owner(owners: &[String], id: &str, verb: &str) -> StoreResult<()> {
    if owners.iter().any(|owner| owner != id) {
        return Ok(());
    }
    Err(StoreError::Refused {
        code: "last_owner",
        message: format!(
            "cannot {verb} the account's last owner; make another member an owner first"
        ),
    })
}

/// Members with their user's email. Users are not tenant data; the account
/// filter is on `members`.
pub(super) const MEMBER_SELECT: &str = "SELECT m.id AS id, m.account_id AS account_id, m.user_id AS user_id, \
     u.email AS email, m.role AS role, m.permissions AS permissions, m.created_at AS created_at \
     FROM members m JOIN users u ON u.id = m.user_id";

pub(super) async fn list_members(
    conn: &mut AnyConnection,
    account: &str,
    window: PageWindow<'_>,
) -> StoreResult<Page<Member>> {
    let rows = sqlx::query(&format!(
        "{MEMBER_SELECT} WHERE m.account_id = $1 AND ($2 IS NULL OR m.id > $2) ORDER BY m.id LIMIT $3"
    ))
    .bind(account)
    .bind(window.after)
    .bind(window.fetch_limit())
    .fetch_all(conn)
    .await?;
    let members = rows
        .iter()
        .map(member_from_row)
        .collect::<StoreResult<_>>()?;
    Ok(window.into_page(members, |m: &Member| &m.id))
}

pub(super) async fn find_member(
    conn: &mut AnyConnection,
    account: &str,
    id: &str,
) -> StoreResult<Option<Member>> {
    let row = sqlx::query(&format!(
        "{MEMBER_SELECT} WHERE m.account_id = $1 AND m.id = $2"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(member_from_row).transpose()
}

pub(super) fn member_from_row(row: &AnyRow) -> StoreResult<Member> {
    Ok(Member {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        user_id: column(row, "user_id")?,
        email: column(row, "email")?,
        role: parsed(row, "role", Role::parse)?,
        permissions: name_list(row, "permissions", AccountPermission::parse)?,
        created_at: column(row, "created_at")?,
    })
}
