//! Console sign-in state: the session cookie, the signed-in member as a
//! [`Principal`], CSRF tokens, flash messages, and the sign-in rate limit.
//!
//! The cookie carries a random secret; the store keeps only its SHA-256
//! (like every credential). The CSRF token is derived from the same secret,
//! so it needs no storage, changes with every session, and cannot be
//! computed by a page that cannot read the cookie.

use super::page::{ErrorPage, redirect};
use crate::AppState;
use crate::auth::{Identity, Principal, peer_ip};
use crate::clock::now_ms;
use crate::invalidate::InvalidationSlot;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keyward_core::{AccountPermission, KeyHash, Role};
use keyward_store::NewSession;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// How long a session lasts from sign-in. Absolute, not sliding: a stolen
/// cookie stops working at the latest this long after the sign-in.
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
const FLASH_COOKIE: &str = "keyward_flash";
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What the console keeps per server: cookie settings and the sign-in
/// limiter.
pub struct ConsoleState {
    /// Cookies carry `Secure` (and the session cookie the `__Host-`
    /// prefix). Only turn off for plain HTTP on a private network.
    pub secure_cookies: bool,
    sign_in_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    sign_in_by_email: DefaultKeyedRateLimiter<String>,
}

impl ConsoleState {
    pub fn new(secure_cookies: bool) -> Self {
        // 10 attempts at once, then one every 6 s (per address), and the
        // same per email, so that neither one address nor many addresses
        // can guess one user's password quickly.
        let quota = Quota::per_minute(NonZeroU32::new(10).expect("non-zero"));
        Self {
            secure_cookies,
            sign_in_by_ip: RateLimiter::keyed(quota),
            sign_in_by_email: RateLimiter::keyed(quota),
        }
    }

    /// Counts one sign-in attempt; `false` when either limit is exhausted.
    pub fn allow_sign_in(&self, ip: Option<IpAddr>, email: &str) -> bool {
        if self.sign_in_by_ip.len() > 100_000 {
            self.sign_in_by_ip.retain_recent();
            self.sign_in_by_email.retain_recent();
        }
        let ip_ok = ip.is_none_or(|ip| self.sign_in_by_ip.check_key(&ip).is_ok());
        let email_ok = self.sign_in_by_email.check_key(&email.to_owned()).is_ok();
        ip_ok && email_ok
    }

    fn session_cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-keyward_session"
        } else {
            "keyward_session"
        }
    }

    /// `Set-Cookie` for a new session's secret.
    pub fn session_cookie(&self, secret: String) -> HeaderValue {
        let cookie = Cookie::build((self.session_cookie_name(), secret))
            .path("/")
            .http_only(true)
            .secure(self.secure_cookies)
            .same_site(SameSite::Strict)
            .max_age(cookie::time::Duration::milliseconds(SESSION_TTL_MS))
            .build();
        header_value(&cookie)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_session_cookie(&self) -> HeaderValue {
        let cookie = Cookie::build((self.session_cookie_name(), ""))
            .path("/")
            .http_only(true)
            .secure(self.secure_cookies)
            .same_site(SameSite::Strict)
            .max_age(cookie::time::Duration::ZERO)
            .build();
        header_value(&cookie)
    }

    fn flash_cookie(&self, value: &str, max_age_s: i64) -> HeaderValue {
        let cookie = Cookie::build((FLASH_COOKIE, value))
            .path("/")
            .http_only(true)
            .secure(self.secure_cookies)
            .same_site(SameSite::Strict)
            .max_age(cookie::time::Duration::seconds(max_age_s))
            .build();
        header_value(&cookie)
    }
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    HeaderValue::from_str(&cookie.encoded().to_string()).expect("cookie is a valid header")
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse_encoded)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

pub fn secret_hash(secret: &str) -> String {
    KeyHash::of(secret).to_hex()
}

fn csrf_token(secret: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"keyward console csrf\0");
    digest.update(secret.as_bytes());
    hex(&digest.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-shot message shown on the next page (after a redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

impl Flash {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }

    fn encode(&self) -> String {
        format!("{}{}", if self.ok { 'o' } else { 'e' }, self.message)
    }

    fn decode(value: &str) -> Option<Self> {
        let mut chars = value.chars();
        let ok = match chars.next()? {
            'o' => true,
            'e' => false,
            _ => return None,
        };
        Some(Self {
            ok,
            message: chars.as_str().chars().take(500).collect(),
        })
    }
}

/// 303 to `to`, carrying `flash` to the page there.
pub fn redirect_with(state: &AppState, to: &str, flash: Flash) -> Response {
    let mut response = redirect(to);
    response
        .headers_mut()
        .append(SET_COOKIE, state.console.flash_cookie(&flash.encode(), 60));
    response
}

/// A signed-in member: who they are, what they may do, and the page's CSRF
/// token. Extracting it from a request without a live session redirects to
/// the sign-in page.
#[derive(Debug, Clone)]
pub struct ConsoleUser {
    pub principal: Principal,
    pub email: String,
    pub role: Role,
    pub csrf: String,
    /// The message the previous request left, consumed by this page.
    pub flash: Option<Flash>,
}

impl ConsoleUser {
    pub fn can(&self, permission: AccountPermission) -> bool {
        self.principal.has(permission)
    }

    /// Adds the `Set-Cookie` that consumes the flash this page showed.
    pub fn finish(&self, state: &AppState, mut response: Response) -> Response {
        if self.flash.is_some() {
            response
                .headers_mut()
                .append(SET_COOKIE, state.console.flash_cookie("", 0));
        }
        response
    }
}

impl FromRequestParts<AppState> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || {
            let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let next = if parts.method == Method::GET {
                next
            } else {
                "/"
            };
            redirect(&format!(
                "/sign-in?next={}",
                form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            ))
        };
        let cookie_name = state.console.session_cookie_name();
        let Some(secret) = cookie_value(&parts.headers, cookie_name) else {
            return Err(to_sign_in());
        };
        let found = state
            .store
            .find_session(&secret_hash(&secret), now_ms())
            .await
            .map_err(|e| ErrorPage::from(crate::problem::Problem::from(e)).into_response())?;
        let Some(found) = found else {
            return Err(to_sign_in());
        };
        if let Some(slot) = parts.extensions.get::<InvalidationSlot>() {
            slot.set(&found.member.account_id);
        }
        let permissions = found.member.effective_permissions();
        Ok(ConsoleUser {
            principal: Principal::new(
                Arc::new(Identity {
                    account_id: found.member.account_id.clone(),
                    member_id: found.member.id.clone(),
                    token_id: None,
                    permissions,
                }),
                peer_ip(parts),
            ),
            email: found.member.email,
            role: found.member.role,
            csrf: csrf_token(&secret),
            flash: cookie_value(&parts.headers, FLASH_COOKIE)
                .as_deref()
                .and_then(Flash::decode),
        })
    }
}

/// Whether a state-changing request comes from a page of this server. The
/// `SameSite=Strict` cookie already keeps other sites' forms out; this is
/// the second lock for browsers that ignore it.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true; // not sent by every browser for same-origin posts
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    origin_host.is_some() && origin_host == host
}

/// A form with nothing but its CSRF token: a button that does one thing.
#[derive(serde::Deserialize)]
pub struct NoFields {}

/// A form posted by a signed-in member, its CSRF token checked.
pub struct ConsoleForm<T> {
    pub user: ConsoleUser,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for ConsoleForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let user = ConsoleUser::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                ErrorPage::new(StatusCode::PAYLOAD_TOO_LARGE, "That form was too large.")
                    .into_response()
            })?;
        let expired = || {
            ErrorPage::new(
                StatusCode::FORBIDDEN,
                "This form has expired or came from another site. Go back, reload the page and try again.",
            )
            .into_response()
        };
        let sent = form_urlencoded::parse(&bytes)
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.into_owned());
        let valid = sent.is_some_and(|sent| {
            bool::from(sent.as_bytes().ct_eq(user.csrf.as_bytes())) && same_origin(&parts.headers)
        });
        if !valid {
            return Err(expired());
        }
        let form = serde_html_form::from_bytes(&bytes).map_err(|e| {
            ErrorPage::new(
                StatusCode::BAD_REQUEST,
                format!("That form could not be read: {e}."),
            )
            .into_response()
        })?;
        Ok(ConsoleForm { user, form })
    }
}

/// A new session's row, for the member signing in from this request.
pub fn new_session(
    parts_headers: &HeaderMap,
    ip: Option<IpAddr>,
    member_id: String,
    secret: &str,
) -> NewSession {
    NewSession {
        member_id,
        hash_hex: secret_hash(secret),
        expires_at: now_ms() + SESSION_TTL_MS,
        ip: ip.map(|ip| ip.to_string()),
        user_agent: parts_headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(200).collect()),
    }
}

/// The session secret in the request's cookie, if any (for signing out).
pub fn session_secret(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, state.console.session_cookie_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_round_trips_and_rejects_garbage() {
        for flash in [Flash::ok("Key “x” disabled."), Flash::error("no")] {
            assert_eq!(Flash::decode(&flash.encode()), Some(flash));
        }
        assert_eq!(Flash::decode(""), None);
        assert_eq!(Flash::decode("xhello"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_hide_the_secret() {
        let a = csrf_token("secret-a");
        assert_eq!(a, csrf_token("secret-a"));
        assert_ne!(a, csrf_token("secret-b"));
        assert!(!a.contains("secret"));
        assert_ne!(
            a,
            secret_hash("secret-a"),
            "CSRF token must not be the stored hash"
        );
    }

    #[test]
    fn origin_must_match_host_when_sent() {
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static("console.example:8080"));
            if let Some(o) = origin {
                h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        assert!(same_origin(&headers(None)));
        assert!(same_origin(&headers(Some("https://console.example:8080"))));
        assert!(!same_origin(&headers(Some("https://evil.example"))));
        assert!(!same_origin(&headers(Some("null"))));
    }

    #[test]
    fn sign_in_attempts_are_limited_per_email_and_address() {
        let console = ConsoleState::new(true);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..20)
            .filter(|_| console.allow_sign_in(Some(ip), "a@x.example"))
            .count();
        assert_eq!(allowed, 10);
        // Another address, same email: still limited.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!console.allow_sign_in(Some(other), "a@x.example"));
    }
}
