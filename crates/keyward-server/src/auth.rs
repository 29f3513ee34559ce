//! Authenticating admin API requests: `Authorization: Bearer <management
//! token>` → the token's account and its effective account permissions.

use crate::AppState;
use crate::cache::{CachedPrincipal, Lookup};
use crate::clock::now_ms;
use crate::invalidate::InvalidationSlot;
use crate::outage::Read;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use keyward_core::KeyHash;
use keyward_core::verify::PresentedCredential;
use keyward_core::{AccountPermission, EnvTag};
use keyward_store::Actor;
use keyward_store::StoreResult;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

/// Who is making an authenticated request: the [`Identity`] its token or
/// session stands for, and where the request came from. The identity is
/// shared (a token's with its cache entry), so authenticating a request
/// copies no string; its fields read through the principal.
#[derive(Debug, Clone)]
pub struct Principal {
    identity: Arc<Identity>,
    /// The TCP peer's address, canonical (an IPv4-mapped IPv6 address reads
    /// as IPv4). `None` only when the server runs without connection info.
    /// Formatted only when an audit event needs it.
    pub peer_ip: Option<IpAddr>,
}

/// The member a token or console session acts for, and what it may do.
#[derive(Debug)]
pub struct Identity {
    pub account_id: String,
    pub member_id: String,
    /// The management token the request carried; `None` for a console
    /// session.
    pub token_id: Option<String>,
    pub permissions: Vec<AccountPermission>,
}

impl Deref for Principal {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

impl Principal {
    pub fn new(identity: Arc<Identity>, peer_ip: Option<IpAddr>) -> Self {
        Self { identity, peer_ip }
    }

    pub fn has(&self, permission: AccountPermission) -> bool {
        self.permissions.contains(&permission)
    }

    /// The actor the audit log records for this request's changes.
    pub fn actor(&self) -> Actor {
        Actor {
            member_id: Some(self.member_id.clone()),
            token_id: self.token_id.clone(),
            ip: self.peer_ip.map(|ip| ip.to_string()),
        }
    }
}

/// The request's TCP peer. The peer, not `X-Forwarded-For`: a header any
/// client can set must not decide what the audit log says.
pub(crate) fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical())
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

impl<R: Requirement> Authorized<R> {
    /// The principal, if it holds `R::PERMISSION`; else 403. The console,
    /// which authenticates by session, authorizes through this too.
    pub fn check(principal: Principal) -> Result<Self, Problem> {
        if !principal.has(R::PERMISSION) {
            return Err(Problem::forbidden(format!(
                "this needs the account permission {:?} (for a token: it needs it, and so does the member it acts for)",
                R::PERMISSION.as_str()
            )));
        }
        Ok(Authorized(principal, PhantomData))
    }
}

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
        // The constant, not `EnvTag::management()`, which allocates a String.
        if parsed.env_tag() != EnvTag::MANAGEMENT {
            return Err(invalid());
        }
        let now = now_ms();
        let cached = lookup_token(state, &parsed.hash(), now)
            .await
            .map_err(Problem::from)?
            .ok_or_else(invalid)?;
        if cached.expires_at.is_some_and(|at| at <= now) {
            return Err(invalid());
        }
        if let Some(token_id) = cached.identity.token_id.as_deref()
            && cached.use_is_due(now)
        {
            let account_id = &cached.identity.account_id;
            state
                .verifier
                .request_logs()
                .note_token_use(account_id, token_id, now);
        }
        if let Some(slot) = parts.extensions.get::<InvalidationSlot>() {
            slot.set(&cached.identity.account_id);
        }
        Ok(Principal::new(cached.identity.clone(), peer_ip(parts)))
    }
}

/// The token's identity (the principal without the request's peer): from the
/// cache, else from the store (and then cached, found or not), else — the
/// store being unavailable — from an entry only past its TTL, so that
/// verification through a token rides out an outage too. Deleting the
/// token or changing its member invalidates the account's entries (see
/// `crate::invalidate`).
async fn lookup_token(
    state: &AppState,
    hash: &KeyHash,
    now: i64,
) -> StoreResult<Option<Arc<CachedPrincipal>>> {
    let cache = state.verifier.cache();
    let (ticket, stale) = match cache.token(hash.as_bytes(), now) {
        Lookup::Hit(principal) => return Ok(Some(principal)),
        Lookup::Unknown => return Ok(None),
        Lookup::Miss(ticket, stale) => (ticket, stale),
    };
    let hex = hash.to_hex();
    let read = state.store.find_token_by_hash(&hex);
    match state.verifier.outage().read(stale, read).await? {
        Read::Stale(principal) => Ok(Some(principal)),
        Read::Fresh(Some(found)) => {
            let cached = Arc::new(CachedPrincipal::new(
                Identity {
                    permissions: found.effective_permissions(),
                    token_id: Some(found.token.id),
                    account_id: found.token.account_id,
                    member_id: found.member.id,
                },
                found.token.expires_at,
            ));
            cache.insert_token(ticket, *hash.as_bytes(), cached.clone(), now);
            Ok(Some(cached))
        }
        Read::Fresh(None) => {
            cache.insert_unknown(ticket, *hash.as_bytes(), now);
            Ok(None)
        }
    }
}

impl<R: Requirement> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, AuthRejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Self::check(principal)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_from(peer: Option<&str>) -> Parts {
        let mut request = axum::http::Request::new(());
        if let Some(peer) = peer {
            let addr: SocketAddr = peer.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(addr));
        }
        request.into_parts().0
    }

    #[test]
    fn the_peer_address_is_canonical() {
        let ip = |peer| peer_ip(&parts_from(Some(peer))).map(|ip| ip.to_string());
        assert_eq!(ip("203.0.113.7:443").as_deref(), Some("203.0.113.7"));
        assert_eq!(
            ip("[::ffff:203.0.113.7]:443").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(ip("[2001:db8::1]:443").as_deref(), Some("2001:db8::1"));
        assert_eq!(peer_ip(&parts_from(None)), None);
    }
}
