//! The console's sign-in: users' password hashes, sessions and invitations.
//! Sessions and invitations are found by the SHA-256 of their secret, like
//! every other credential; the secrets themselves are never stored.

use super::accounts::{MEMBER_SELECT, find_member, member_from_row};
use super::decode::column;
use crate::error::{StoreError, StoreResult};
use crate::ids::{new_id, now_ms};
use crate::records::*;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

pub(super) async fn find_user(
    conn: &mut AnyConnection,
    email: &str,
) -> StoreResult<Option<SignInUser>> {
    let Some(row) = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let user_id: String = column(&row, "id")?;
    let memberships = sqlx::query(&format!(
        "{MEMBER_SELECT} WHERE m.user_id = $1 ORDER BY m.created_at, m.id"
    ))
    .bind(&user_id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(member_from_row)
    .collect::<StoreResult<_>>()?;
    Ok(Some(SignInUser {
        user_id,
        password_hash: column(&row, "password_hash")?,
        memberships,
    }))
}

/// Inserts a session, first dropping the account's expired ones (sessions
/// are few; this keeps the table from growing without a sweep job).
pub(super) async fn create_session(
    conn: &mut AnyConnection,
    account: &str,
    new: NewSession,
) -> StoreResult<Session> {
    let now = now_ms();
    sqlx::query("DELETE FROM console_sessions WHERE account_id = $1 AND expires_at <= $2")
        .bind(account)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    if find_member(conn, account, &new.member_id).await?.is_none() {
        return Err(StoreError::not_found("member"));
    }
    let session = Session {
        id: new_id("sess"),
        account_id: account.to_owned(),
        member_id: new.member_id,
        created_at: now,
        expires_at: new.expires_at,
    };
    sqlx::query(
        "INSERT INTO console_sessions (id, hash, account_id, member_id, created_at, expires_at, \
         ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&session.id)
    .bind(&new.hash_hex)
    .bind(account)
    .bind(&session.member_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(new.ip)
    .bind(new.user_agent)
    .execute(conn)
    .await?;
    Ok(session)
}

pub(super) async fn find_session(
    conn: &mut AnyConnection,
    hash_hex: &str,
    now: i64,
) -> StoreResult<Option<SessionPrincipal>> {
    let row = sqlx::query(
        "SELECT id, account_id, member_id, created_at, expires_at FROM console_sessions \
         WHERE hash = $1 AND expires_at > $2",
    )
    .bind(hash_hex)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(session) = row.as_ref().map(session_from_row).transpose()? else {
        return Ok(None);
    };
    let member = find_member(conn, &session.account_id, &session.member_id).await?;
    Ok(member.map(|member| SessionPrincipal { session, member }))
}

fn session_from_row(row: &AnyRow) -> StoreResult<Session> {
    Ok(Session {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        member_id: column(row, "member_id")?,
        created_at: column(row, "created_at")?,
        expires_at: column(row, "expires_at")?,
    })
}

/// Removes the session with this hash; returns it if there was one.
pub(super) async fn delete_session(
    conn: &mut AnyConnection,
    hash_hex: &str,
) -> StoreResult<Option<Session>> {
    let row = sqlx::query(
        "DELETE FROM console_sessions WHERE hash = $1 \
         RETURNING id, account_id, member_id, created_at, expires_at",
    )
    .bind(hash_hex)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// An invitation for a new member, if their user has no password yet;
/// `None` when they have one (they sign in as they are).
pub(super) async fn create_invitation(
    conn: &mut AnyConnection,
    account: &str,
    member_id: &str,
    new: &NewInvitation,
) -> StoreResult<Option<Invitation>> {
    let member = find_member(conn, account, member_id)
        .await?
        .ok_or_else(|| StoreError::not_found("member"))?;
    let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(&member.user_id)
        .fetch_one(&mut *conn)
        .await?;
    if column::<Option<String>>(&row, "password_hash")?.is_some() {
        return Ok(None);
    }
    let invitation = Invitation {
        id: new_id("inv"),
        account_id: account.to_owned(),
        member_id: member_id.to_owned(),
        expires_at: new.expires_at,
    };
    sqlx::query(
        "INSERT INTO invitations (id, hash, account_id, member_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&invitation.id)
    .bind(&new.hash_hex)
    .bind(account)
    .bind(member_id)
    .bind(now_ms())
    .bind(new.expires_at)
    .execute(conn)
    .await?;
    Ok(Some(invitation))
}

/// Consumes the unexpired invitation with this hash and sets its user's
/// password, unless the user set one meanwhile. Returns the member.
pub(super) async fn accept_invitation(
    conn: &mut AnyConnection,
    hash_hex: &str,
    password_hash: &str,
    now: i64,
) -> StoreResult<Option<Member>> {
    let Some(row) = sqlx::query(
        "DELETE FROM invitations WHERE hash = $1 RETURNING account_id, member_id, expires_at",
    )
    .bind(hash_hex)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    if column::<i64>(&row, "expires_at")? <= now {
        return Ok(None);
    }
    let account: String = column(&row, "account_id")?;
    let member_id: String = column(&row, "member_id")?;
    let Some(member) = find_member(conn, &account, &member_id).await? else {
        return Ok(None);
    };
    let updated =
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash IS NULL")
            .bind(password_hash)
            .bind(&member.user_id)
            .execute(conn)
            .await?;
    Ok((updated.rows_affected() == 1).then_some(member))
}
