//! Authenticating admin API requests: `Authorization: Bearer <management
//! token>` → the token's account and its effective account permissions.

use crate::AppState;
use crate::clock::now_ms;
use crate::problem::Problem;
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::verify::PresentedCredential;
use keyward_core::{AccountPermission, EnvTag};
use std::marker::PhantomData;

/// Who is making an authenticated request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: String,
    pub member_id: String,
    pub permissions: Vec<AccountPermission>,
}

impl Principal {
    pub fn has(&self, permission: AccountPermission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// An account permission an endpoint requires.
pub trait Requirement {
    const PERMISSION: AccountPermission;
}

pub struct ManageCredentials;
impl Requirement for ManageCredentials {
    const PERMISSION: AccountPermission = AccountPermission::ManageApiCredentials;
}

pub struct ManageMembers;
impl Requirement for ManageMembers {
    const PERMISSION: AccountPermission = AccountPermission::ManageMembers;
}

pub struct VerifyKeys;
impl Requirement for VerifyKeys {
    const PERMISSION: AccountPermission = AccountPermission::VerifyKeys;
}

/// A principal holding `R::PERMISSION`; extraction answers 401 or 403.
pub struct Authorized<R>(pub Principal, pub PhantomData<R>);

/// 401 with the challenge RFC 6750 asks for.
pub struct Unauthenticated(Problem);

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keyward\""),
        );
        response
    }
}

pub enum AuthRejection {
    Unauthenticated(Unauthenticated),
    Problem(Problem),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Unauthenticated(u) => u.into_response(),
            AuthRejection::Problem(p) => p.into_response(),
        }
    }
}

impl From<Problem> for AuthRejection {
    fn from(p: Problem) -> Self {
        AuthRejection::Problem(p)
    }
}

fn unauthenticated(detail: &str) -> AuthRejection {
    AuthRejection::Unauthenticated(Unauthenticated(Problem::unauthenticated(detail)))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, AuthRejection> {
        // The idempotency middleware may have authenticated the request already.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            unauthenticated("send a management token as Authorization: Bearer <token>")
        })?;
        let credential = header
            .to_str()
            .ok()
            .and_then(PresentedCredential::from_authorization)
            .filter(|c| c.claimed_id().is_none())
            .ok_or_else(|| {
                unauthenticated("the Authorization header must be Bearer <management token>")
            })?;
        let invalid = || unauthenticated("the management token is invalid, expired or revoked");
        let parsed = state
            .format
            .parse(credential.expose_secret())
            .map_err(|_| invalid())?;
        if parsed.env_tag() != EnvTag::management().as_str() {
            return Err(invalid());
        }
        let found = state
            .store
            .find_token_by_hash(&parsed.hash().to_hex())
            .await
            .map_err(Problem::from)?
            .ok_or_else(invalid)?;
        if found.token.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(invalid());
        }
        Ok(Principal {
            permissions: found.effective_permissions(),
            account_id: found.token.account_id,
            member_id: found.member.id,
        })
    }
}

impl<R: Requirement> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, AuthRejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if !principal.has(R::PERMISSION) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this token lacks the account permission {:?} (it needs it, and so does the member it acts for)",
                    R::PERMISSION.as_str()
                ),
            )
            .into());
        }
        Ok(Authorized(principal, PhantomData))
    }
}
