//! Members (seed 001): invite with a role and the "Manage API credentials"
//! permission, change them, remove them; and the signed-in member's own
//! account page.

use super::credentials::every_page;
use super::page::{Chrome, html, page, readable, when};
use super::session::{ConsoleForm, ConsoleUser, Flash, NoFields, redirect_with};
use super::{PageResult, authorized, redirect_after};
use crate::AppState;
use crate::api::members;
use crate::auth::{Authorized, ManageMembers};
use crate::extract::Body;
use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::HOST;
use axum::routing::{get, post};
use keyward_core::{AccountPermission, Role};
use serde::Deserialize;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/members", get(list).post(invite))
        .route("/members/{id}", post(change))
        .route("/members/{id}/remove", post(remove))
        .route("/account", get(account))
}

pub struct MemberRow {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    pub manages_credentials: bool,
    pub since: String,
    pub is_me: bool,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    chrome: Chrome,
    members: Vec<MemberRow>,
    i_am_owner: bool,
}

async fn list(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    authorized::<ManageMembers>(&user)?;
    let all = every_page(|page| async {
        let auth = Authorized::<ManageMembers>::check(user.principal.clone())?;
        members::list(State(state.clone()), auth, page).await
    })
    .await?;
    let rows = all
        .into_iter()
        .map(|m| MemberRow {
            is_me: m.id == user.principal.member_id,
            manages_credentials: m
                .effective_permissions
                .contains(&AccountPermission::ManageApiCredentials),
            id: m.id,
            email: m.email,
            role: m.role.as_str(),
            since: when(Some(m.created_at)),
        })
        .collect();
    let view = MembersPage {
        chrome: Chrome::new(&user, "members"),
        members: rows,
        i_am_owner: user.role == Role::Owner,
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemberForm {
    email: String,
    role: String,
    manage_api_credentials: Option<String>,
}

impl MemberForm {
    fn role(&self) -> crate::problem::ApiResult<Role> {
        Role::parse(&self.role).map_err(crate::api::field("role"))
    }

    /// Grants go to plain members only; owners and admins hold everything.
    fn grants(&self, role: Role) -> Vec<AccountPermission> {
        match (role, self.manage_api_credentials.is_some()) {
            (Role::Member, true) => vec![AccountPermission::ManageApiCredentials],
            _ => Vec::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "invited.html")]
struct InvitedPage {
    chrome: Chrome,
    email: String,
    link: Option<String>,
    expires: String,
}

async fn invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConsoleForm { user, form }: ConsoleForm<MemberForm>,
) -> PageResult {
    let created = match form.role() {
        Ok(role) => {
            let request = members::CreateMember {
                email: form.email.clone(),
                role,
                permissions: form.grants(role),
            };
            members::create(State(state.clone()), authorized(&user)?, Body(request)).await
        }
        Err(problem) => Err(problem),
    };
    let created = match created {
        Ok(crate::api::Created(created)) => created,
        Err(problem) if problem.status_code().is_client_error() => {
            return Ok(redirect_with(
                &state,
                "/members",
                Flash::error(readable(&problem)),
            ));
        }
        Err(problem) => return Err(problem.into()),
    };
    // The link is shown once; the server keeps only its hash.
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let view = InvitedPage {
        chrome: Chrome::new(&user, "members"),
        email: created.member.email,
        expires: when(created.invitation.as_ref().map(|i| i.expires_at)),
        link: created
            .invitation
            .map(|i| format!("http://{host}{}", i.path)),
    };
    Ok(user.finish(&state, html(StatusCode::CREATED, &view)))
}

async fn change(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, form }: ConsoleForm<MemberForm>,
) -> PageResult {
    let done = match form.role() {
        Ok(role) => {
            let request = members::UpdateMember {
                role: Some(role),
                permissions: Some(form.grants(role)),
            };
            members::update(
                State(state.clone()),
                authorized(&user)?,
                Path(id),
                Body(request),
            )
            .await
            .map(|Json(m)| format!("{} is now {}.", m.email, m.role.as_str()))
        }
        Err(problem) => Err(problem),
    };
    redirect_after(&state, "/members", done)
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ConsoleForm { user, .. }: ConsoleForm<NoFields>,
) -> PageResult {
    let done = members::delete(State(state.clone()), authorized(&user)?, Path(id))
        .await
        .map(|_| "Member removed; their sessions and tokens stopped working.".to_owned());
    redirect_after(&state, "/members", done)
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    role: &'static str,
    permissions: Vec<&'static str>,
}

async fn account(State(state): State<AppState>, user: ConsoleUser) -> PageResult {
    let view = AccountPage {
        chrome: Chrome::new(&user, "account"),
        role: user.role.as_str(),
        permissions: user
            .principal
            .permissions
            .iter()
            .map(|p| p.as_str())
            .collect(),
    };
    Ok(page(&state, &user, &view))
}
