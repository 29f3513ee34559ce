//! Management tokens (SPEC §1, §5): the bearer credentials scripts and
//! services use for the admin API and `POST /v1/verify`. Listed with what
//! each may do and when it was last used, created with the token shown
//! once, revoked at once. Without this page a person who signed up in the
//! console had no way to the API but a shell on the server.

use super::credentials::{SecretPage, Shown, every_page};
use super::page::{Chrome, page, when};
use super::session::{ConsoleForm, ConsoleUser, NoFields};
use super::{PageResult, authorized, redirect_after};
use crate::AppState;
use crate::api::{Created, members, tokens};
use crate::auth::{Authorized, ManageMembers};
use crate::extract::{Body, Timestamp};
use crate::problem::{ApiResult, Problem};
use askama::Template;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use keyward_core::AccountPermission;
use serde::Deserialize;
use std::collections::HashMap;
use time::{Duration, OffsetDateTime};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}/revoke", post(revoke))
}

/// The lifetimes offered when creating a token, in days; `None` is no expiry.
const LIFETIMES: [(Option<i64>, &str); 5] = [
    (Some(7), "7 days"),
    (Some(30), "30 days"),
    (Some(90), "90 days"),
    (Some(365), "1 year"),
    (None, "No expiry"),
];

/// The offered lifetime chosen when none was: short-lived by default, as
/// a long-lived automation credential should be a decision.
const DEFAULT_LIFETIME_DAYS: i64 = 90;

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub hint: String,
    pub acts_for: String,
    pub permissions: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub expired: bool,
}

pub struct MemberChoice {
    pub id: String,
    pub email: String,
    pub is_me: bool,
}

pub struct PermissionChoice {
    pub value: &'static str,
    pub label: &'static str,
}

/// What each account permission lets a token do, in the form's words.
const PERMISSION_CHOICES: [PermissionChoice; 3] = [
    PermissionChoice {
        value: "keys:verify",
        label: "Verify keys (POST /v1/verify)",
    },
    PermissionChoice {
        value: "manage_api_credentials",
        label: "Manage API credentials (workspaces, keys, allowlist, integrations)",
    },
    PermissionChoice {
        value: "manage_members",
        label: "Manage members and tokens",
    },
];

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    members: Vec<MemberChoice>,
    permissions: &'static [PermissionChoice],
    lifetimes: Vec<(String, &'static str)>,
    default_lifetime: String,
}

async fn list(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    authorized::<ManageMembers>(&user)?;
    let auth = || Authorized::<ManageMembers>::check(user.principal.clone());
    let all_members =
        every_page(|page| async { members::list(State(state.clone()), auth()?, page).await })
            .await?;
    let all_tokens =
        every_page(|page| async { tokens::list(State(state.clone()), auth()?, page).await })
            .await?;
    let emails: HashMap<&str, &str> = all_members
        .iter()
        .map(|m| (m.id.as_str(), m.email.as_str()))
        .collect();
    let now = OffsetDateTime::now_utc();
    let rows = all_tokens
        .into_iter()
        .map(|t| TokenRow {
            acts_for: emails
                .get(t.member_id.as_str())
                .map_or_else(|| t.member_id.clone(), |email| (*email).to_owned()),
            permissions: names(&t.permissions),
            created: when(Some(t.created_at)),
            last_used: when(t.last_used_at),
            expires: when(t.expires_at),
            expired: t.expires_at.is_some_and(|at| at <= now),
            id: t.id,
            name: t.name,
            hint: t.hint,
        })
        .collect();
    let view = TokensPage {
        chrome: Chrome::new(&user, "tokens"),
        tokens: rows,
        members: all_members
            .into_iter()
            .map(|m| MemberChoice {
                is_me: m.id == user.principal.member_id,
                id: m.id,
                email: m.email,
            })
            .collect(),
        permissions: &PERMISSION_CHOICES,
        lifetimes: LIFETIMES
            .iter()
            .map(|(days, label)| (lifetime_value(*days), *label))
            .collect(),
        default_lifetime: lifetime_value(Some(DEFAULT_LIFETIME_DAYS)),
    };
    Ok(page(&state, &user, &view))
}

fn names(permissions: &[AccountPermission]) -> String {
    match permissions {
        [] => "None".to_owned(),
        _ => permissions
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A lifetime as the form's `<option>` value: days, or `never`.
fn lifetime_value(days: Option<i64>) -> String {
    days.map_or_else(|| "never".to_owned(), |d| d.to_string())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenForm {
    name: String,
    member_id: String,
    permissions: Vec<String>,
    lifetime: String,
}

impl TokenForm {
    /// The API's request body, or the problem naming the field at fault.
    fn request(self, now: OffsetDateTime) -> ApiResult<tokens::CreateManagementToken> {
        let permissions = self
            .permissions
            .iter()
            .map(|p| AccountPermission::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::api::field("permissions"))?;
        if permissions.is_empty() {
            return Err(Problem::invalid(
                "permissions",
                "choose at least one thing the token may do",
            ));
        }
        Ok(tokens::CreateManagementToken {
            name: self.name,
            permissions,
            member_id: Some(self.member_id).filter(|id| !id.is_empty()),
            expires_at: expiry(&self.lifetime, now)?.map(Timestamp),
        })
    }
}

/// The expiry a lifetime gives, counted from `now`; only the offered
/// lifetimes are accepted.
fn expiry(lifetime: &str, now: OffsetDateTime) -> ApiResult<Option<OffsetDateTime>> {
    let offered = LIFETIMES
        .iter()
        .find(|(days, _)| lifetime_value(*days) == lifetime)
        .ok_or_else(|| Problem::invalid("lifetime", "choose one of the offered lifetimes"))?;
    Ok(offered.0.map(|days| now + Duration::days(days)))
}

async fn create(
    State(state): State<AppState>,
    ConsoleForm { user, form }: ConsoleForm<TokenForm>,
) -> PageResult {
    let created = match form.request(OffsetDateTime::now_utc()) {
        Ok(request) => {
            tokens::create(State(state.clone()), authorized(&user)?, Body(request)).await
        }
        Err(problem) => Err(problem),
    };
    let Created(created) = match created {
        Ok(created) => created,
        Err(problem) => return redirect_after(&state, "/tokens", Err(problem)),
    };
    let view = SecretPage {
        chrome: Chrome::new(&user, "tokens"),
        heading: "Management token created",
        name: created.token.name.clone(),
        values: vec![Shown {
            label: "Management token",
            value: created.secret.expose().to_owned(),
            slot: "secret",
        }],
        note: Some(format!(
            "Send it as “Authorization: Bearer …” to the /v1 API. It may do: {}; never more than the member it acts for. {}",
            names(&created.token.permissions),
            match created.token.expires_at {
                Some(at) => format!("It stops working at {}.", when(Some(at))),
                None => "It does not expire: revoke it when it is no longer needed.".to_owned(),
            }
        )),
        continue_to: "/tokens".to_owned(),
    };
    Ok(page(&state, &user, &view))
}

async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = tokens::delete(State(state.clone()), authorized(&user)?, Path(id))
        .await
        .map(|_| "Token revoked: requests with it are refused from now on.".to_owned());
    redirect_after(&state, "/tokens", done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_counted_from_now_and_only_offered_ones_accepted() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(expiry("30", now).unwrap(), Some(now + Duration::days(30)));
        assert_eq!(expiry("never", now).unwrap(), None);
        for refused in ["", "31", "-1", "forever"] {
            let problem = expiry(refused, now).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some("lifetime"), "{refused}");
        }
        assert_eq!(
            lifetime_value(Some(DEFAULT_LIFETIME_DAYS)),
            "90",
            "the default is an offered lifetime"
        );
        assert!(
            LIFETIMES
                .iter()
                .any(|(d, _)| *d == Some(DEFAULT_LIFETIME_DAYS))
        );
    }

    #[test]
    fn a_form_needs_known_permissions_and_at_least_one() {
        let form = |permissions: &[&str]| TokenForm {
            name: "CI".into(),
            member_id: String::new(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            lifetime: "7".into(),
        };
        let now = OffsetDateTime::UNIX_EPOCH;
        let request = form(&["keys:verify"]).request(now).unwrap();
        assert_eq!(request.permissions, [AccountPermission::VerifyKeys]);
        assert_eq!(request.member_id, None, "empty means the signed-in member");
        for refused in [&[][..], &["keys:everything"][..]] {
            let problem = form(refused).request(now).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some("permissions"));
        }
    }
}
