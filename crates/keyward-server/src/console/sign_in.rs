//! Signing in and out, and accepting an invitation (which sets a first
//! password and signs the new member in).

use super::page::{ErrorPage, html, redirect};
use super::session::{ConsoleForm, new_session, same_origin, secret_hash, session_secret};
use crate::AppState;
use crate::auth::peer_ip;
use crate::clock::now_ms;
use crate::secrets;
use askama::Template;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use keyward_core::{normalize_email, validate_password};
use keyward_store::{Actor, Member};
use serde::Deserialize;
use std::net::IpAddr;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", axum::routing::post(sign_out))
        .route("/invitations/{token}", get(invitation_page).post(accept))
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    email: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// Only a path on this server: an open redirect would let a link to the
/// sign-in page send people anywhere.
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into())
}

async fn sign_in_page(Query(query): Query<Next>) -> Response {
    let page = SignInPage {
        email: String::new(),
        next: safe_next(query.next),
        error: None,
    };
    html(StatusCode::OK, &page)
}

#[derive(Deserialize)]
struct SignIn {
    email: String,
    password: String,
    next: Option<String>,
}

async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let ip = peer_ip(&parts);
    if !same_origin(&parts.headers) {
        return cross_site();
    }
    let Ok(Form(form)) =
        Form::<SignIn>::from_request(Request::from_parts(parts.clone(), body), &state).await
    else {
        return ErrorPage::new(StatusCode::BAD_REQUEST, "Enter your email and password.")
            .into_response();
    };
    let next = safe_next(form.next.clone());
    let refuse = |status, message: &str| {
        let page = SignInPage {
            email: form.email.clone(),
            next: next.clone(),
            error: Some(message.into()),
        };
        html(status, &page)
    };
    let email = normalize_email(&form.email).unwrap_or_else(|_| form.email.trim().to_owned());
    if !state.console.allow_sign_in(ip, &email) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a minute, then try again.",
        );
    }
    let user = match state.store.find_user_for_sign_in(&email).await {
        Ok(user) => user,
        Err(e) => return ErrorPage::from(crate::problem::Problem::from(e)).into_response(),
    };
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = form.password.clone();
    let matched =
        tokio::task::spawn_blocking(move || secrets::verify_password(&password, phc.as_deref()))
            .await
            .unwrap_or(false);
    // One message for every failure: it must not tell which emails exist.
    let wrong = "That email and password do not match an account.";
    let Some(member) = user
        .filter(|_| matched)
        .and_then(|u| u.memberships.into_iter().next())
    else {
        return refuse(StatusCode::UNAUTHORIZED, wrong);
    };
    start_session(&state, &parts.headers, ip, member, &next).await
}

/// Another site's page posting here would sign the visitor in to an
/// account of the attacker's choosing (login CSRF).
fn cross_site() -> Response {
    ErrorPage::new(
        StatusCode::FORBIDDEN,
        "This form came from another site. Open the sign-in page of this server and try again.",
    )
    .into_response()
}

/// Creates the member's session and sends the browser on with its cookie.
async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
    member: Member,
    next: &str,
) -> Response {
    let secret = secrets::random_token();
    let actor = Actor {
        member_id: Some(member.id.clone()),
        token_id: None,
        ip: ip.map(|ip| ip.to_string()),
    };
    let new = new_session(headers, ip, member.id.clone(), &secret);
    if let Err(e) = state
        .store
        .create_session(&member.account_id, &actor, new)
        .await
    {
        return ErrorPage::from(crate::problem::Problem::from(e)).into_response();
    }
    let mut response = redirect(next);
    response
        .headers_mut()
        .append(SET_COOKIE, state.console.session_cookie(secret));
    response
}

#[derive(Deserialize)]
struct Nothing {}

/// Ends the session in the store (not only in the browser), so the cookie
/// is worthless afterwards even if it was copied.
async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    _checked: ConsoleForm<Nothing>,
) -> Response {
    if let Some(secret) = session_secret(&state, &headers)
        && let Err(error) = state.store.delete_session(&secret_hash(&secret)).await
    {
        tracing::warn!(%error, "console: could not end a session");
    }
    let mut response = redirect("/sign-in");
    response
        .headers_mut()
        .append(SET_COOKIE, state.console.clear_session_cookie());
    response
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    error: Option<String>,
}

async fn invitation_page(Path(_token): Path<String>) -> Response {
    html(StatusCode::OK, &InvitationPage { error: None })
}

#[derive(Deserialize)]
struct Accept {
    password: String,
    confirm: String,
}

/// Sets the invited member's first password and signs them in.
async fn accept(
    State(state): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let ip = peer_ip(&parts);
    if !same_origin(&parts.headers) {
        return cross_site();
    }
    let refuse = |status, message: &str| {
        html(
            status,
            &InvitationPage {
                error: Some(message.into()),
            },
        )
    };
    let Ok(Form(form)) =
        Form::<Accept>::from_request(Request::from_parts(parts.clone(), body), &state).await
    else {
        return refuse(StatusCode::BAD_REQUEST, "Enter a password twice.");
    };
    if form.password != form.confirm {
        return refuse(StatusCode::BAD_REQUEST, "The two passwords differ.");
    }
    if let Err(e) = validate_password(&form.password) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("The password {}.", e.message),
        );
    }
    let password = form.password;
    let Ok(Ok(phc)) = tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await
    else {
        return ErrorPage::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not set the password.",
        )
        .into_response();
    };
    match state
        .store
        .accept_invitation(&secret_hash(&token), &phc, now_ms())
        .await
    {
        Ok(Some(member)) => start_session(&state, &parts.headers, ip, member, "/").await,
        Ok(None) => refuse(
            StatusCode::GONE,
            "This invitation was used already or has expired. Ask an account admin for a new one.",
        ),
        Err(e) => ErrorPage::from(crate::problem::Problem::from(e)).into_response(),
    }
}
