//! Verifying an HTTP request of the platform's own API, as the gateway and
//! the tower layer both do: the key from its headers, the client's address
//! (behind the operator's trusted proxies), the permissions the route
//! needs; and a denial answered as an RFC 9457 problem whose `code` is the
//! verification code.

use crate::AppState;
use crate::clock::now_ms;
use crate::problem::Problem;
use crate::verifier::{RequestLine, Verdict, VerifyInput};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use keyward_core::PermissionName;
use keyward_core::gateway::customer_in_header;
use keyward_core::ip::{self, client_address};
use keyward_core::verify::{Code, PresentedCredential};
use std::net::IpAddr;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whose keys a listener accepts and how it reads its clients.
pub(crate) struct RequestCheck {
    pub state: AppState,
    /// Keys of any other account are `unknown_key`.
    pub account_id: String,
    /// The environment the protected API serves, when it serves one.
    pub environment: Option<String>,
    /// The operator's own proxies in front (a load balancer): from them,
    /// the client's address is taken from `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
}

/// A request the check refused, and the answer for its client.
pub(crate) enum Refusal {
    /// The verification said no: 401, 403 or 429.
    Denied(Response),
    /// The store could not be read and the key was not cached: 503.
    StorageUnavailable(Response),
}

/// What the route a request reached demands of its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteDemand<'a> {
    /// Every one must be held.
    pub permissions: &'a [PermissionName],
    /// The customer the request acts for, when the route names one.
    pub customer_id: Option<&'a str>,
    /// Credits a metered key spends on it.
    pub cost: u64,
}

/// A request whose key was valid.
pub(crate) struct Admitted {
    pub verdict: Verdict,
    /// The address the allowlists were checked against.
    pub client_ip: Option<IpAddr>,
}

impl RequestCheck {
    /// Verifies the request's key for what its route demands. `peer` is
    /// the connection's address (`None` when the server does not know it:
    /// then a key with an IP allowlist is refused).
    pub async fn verify(
        &self,
        peer: Option<IpAddr>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        demand: RouteDemand<'_>,
    ) -> Result<Admitted, Refusal> {
        let client_ip = peer.map(|peer| self.client_ip(peer, headers));
        let input = VerifyInput {
            account_id: &self.account_id,
            credential: presented_credential(headers),
            environment: self.environment.as_deref(),
            permissions: demand.permissions,
            ip: client_ip,
            customer_id: demand.customer_id,
            origin: headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
            request_line: Some(RequestLine {
                method: method.as_str(),
                path,
            }),
            cost: demand.cost,
        };
        match self.state.verifier.verify(input, now_ms()).await {
            Ok(verdict) if verdict.code == Code::Valid => Ok(Admitted { verdict, client_ip }),
            Ok(verdict) => Err(Refusal::Denied(denial(&verdict, headers))),
            Err(error) => Err(Refusal::StorageUnavailable(
                Problem::from(error).into_response(),
            )),
        }
    }

    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let trusted = &self.trusted_proxies;
        // `allows` lets anyone through an empty list; no list trusts no one.
        !trusted.is_empty() && ip::allows(trusted, Some(peer))
    }

    /// The address allowlists are checked against.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = &self.trusted_proxies;
        if trusted.is_empty() {
            return peer.to_canonical();
        }
        let forwarded: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            // An unreadable line ends the walk, as an unparsable entry does.
            .map(|line| line.to_str().unwrap_or(""))
            .collect();
        client_address(peer, &forwarded, trusted)
    }
}

impl Refusal {
    pub fn into_response(self) -> Response {
        match self {
            Self::Denied(response) | Self::StorageUnavailable(response) => response,
        }
    }
}

/// The key as the client sent it: `Authorization` (`Bearer` or `Basic`),
/// else `X-API-Key`. `None` (a `malformed_key` denial) when there is none
/// or it is unreadable.
fn presented_credential(headers: &HeaderMap) -> Option<PresentedCredential<'_>> {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        return PresentedCredential::from_authorization(authorization.to_str().ok()?);
    }
    let key = headers.get(X_API_KEY)?.to_str().ok()?;
    Some(PresentedCredential::bare(key))
}

/// The customer a request names in header `name` (one UTF-8 value, else
/// the empty string, which no key is scoped to).
pub(crate) fn customer_in<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    customer_in_header(headers.get_all(name).iter().map(HeaderValue::as_bytes))
}

/// Removes the credential, so that it goes no further than the check.
pub(crate) fn remove_credential(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(X_API_KEY);
}

/// The verdict as the client's answer: the status the code maps to, a
/// problem document whose `code` is the verification code, and the
/// rate-limit headers.
fn denial(verdict: &Verdict, headers: &HeaderMap) -> Response {
    let code = verdict.code;
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let detail = match code {
        Code::MalformedKey if !has_credential(headers) => {
            "no API key: send it as Authorization: Bearer <key> or X-API-Key"
        }
        Code::RateLimited if verdict.spent_credits() => "the API key has used its credits for now",
        _ => code.description(),
    };
    let mut response = Problem::new(status, code.as_str(), detail).into_response();
    let out = response.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        out.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(state) = &verdict.rate_limit {
        state.write_headers(out);
    }
    if let Some(seconds) = seconds_to_refill(verdict) {
        out.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// For a key out of credits that refills: how long until it does.
fn seconds_to_refill(verdict: &Verdict) -> Option<u64> {
    if !verdict.spent_credits() {
        return None;
    }
    let refill = verdict.key.as_ref()?.key.credits?.refill?;
    let now = now_ms();
    let wait_ms = refill.next_period_start_ms(now).saturating_sub(now);
    u64::try_from(wait_ms).ok().map(|ms| ms.div_ceil(1000))
}

fn has_credential(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(X_API_KEY)
}
