//! `POST /v1/verify`: the platform asks whether a request its client made
//! with a key may proceed. Every outcome of the checks is a `200` with a
//! verdict; non-200 answers mean the verify call itself was wrong.

use crate::AppState;
use crate::auth::{Authorized, VerifyKeys};
use crate::clock::{from_ms_opt, now_ms};
use crate::extract::Body;
use crate::problem::{ApiResult, Problem, ProblemDocument};
use crate::verifier::{Verdict, VerifyInput};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use keyward_core::credits::check_amount;
use keyward_core::verify::{Code, PresentedCredential};
use keyward_core::{KeyKind, PermissionName, validate_customer_id, validate_environment_name};
use keyward_store::VerificationRecord;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The key as presented (one of `key`, `authorization`, `x_api_key`) and
/// what the platform's request needs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key itself.
    pub key: Option<String>,
    /// The client's `Authorization` header, forwarded as-is (`Bearer …` or `Basic …`).
    pub authorization: Option<String>,
    /// The client's `X-API-Key` header, forwarded as-is.
    pub x_api_key: Option<String>,
    /// The environment the platform's endpoint serves.
    pub environment: Option<String>,
    /// Every permission the request needs.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<PermissionName>,
    /// The client's address, for IP allowlists.
    pub ip: Option<String>,
    /// The customer the request acts for.
    pub customer_id: Option<String>,
    /// The request's `Origin` (reserved for publishable keys' origin lists).
    pub origin: Option<String>,
    /// What the request takes from a metered key's credits: 1 by default;
    /// 0 only checks that some are left. Keys without credits ignore it.
    pub cost: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictKey<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub workspace_id: &'a str,
    pub environment: &'a str,
    pub kind: KeyKind,
    pub customer_id: Option<&'a str>,
    #[schema(value_type = Vec<String>)]
    pub permissions: &'a [PermissionName],
    #[schema(value_type = Object)]
    pub meta: &'a Map<String, Value>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitView {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictBody<'a> {
    pub valid: bool,
    pub code: Code,
    /// The HTTP status the platform should answer its client with.
    pub status: u16,
    /// The key, for every outcome after it was found in the caller's account.
    // A `VerdictKey` as the cache entry rendered it, once per entry.
    #[schema(value_type = Option<VerdictKey>)]
    pub key: Option<&'a RawValue>,
    pub rate_limit: Option<RateLimitView>,
    /// A metered key's credits, when the request got as far as drawing on
    /// them: what is left after this request's cost (or, refused, what
    /// there was).
    pub credits: Option<CreditsLeftView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsLeftView {
    pub remaining: u64,
}

const MAX_ORIGIN_LEN: usize = 2048;

/// Verifies a key.
///
/// Needs a management token holding `keys:verify`, except on the private
/// verify listener (`keyward serve --verify-listen`), which answers for one
/// account without a token.
#[utoipa::path(post, operation_id = "verifyKey", path = "/v1/verify", tag = "verify", request_body = VerifyRequest,
    responses((status = 200, body = VerdictBody), (status = 400, body = ProblemDocument), (status = 401, body = ProblemDocument),
              (status = 403, body = ProblemDocument), (status = 503, body = ProblemDocument)))]
pub async fn verify(
    State(state): State<AppState>,
    Authorized(who, _): Authorized<VerifyKeys>,
    Body(request): Body<VerifyRequest>,
) -> ApiResult<Response> {
    verify_for(&state, &who.account_id, request).await
}

/// What the private verify listener serves from: the server's state and
/// the one account whose keys it verifies.
#[derive(Clone)]
pub(crate) struct PrivateVerify {
    pub state: AppState,
    pub account_id: Arc<str>,
}

/// `POST /v1/verify` on the private listener: no token, because only the
/// operator's own network can reach it (SPEC §5), and the account is the
/// one the operator bound the listener to.
pub(crate) async fn verify_private(
    State(listener): State<PrivateVerify>,
    Body(request): Body<VerifyRequest>,
) -> ApiResult<Response> {
    verify_for(&listener.state, &listener.account_id, request).await
}

/// Validates the request into a [`VerifyInput`] acting for `account_id`,
/// verifies, and renders the verdict.
async fn verify_for(
    state: &AppState,
    account_id: &str,
    mut request: VerifyRequest,
) -> ApiResult<Response> {
    // Taken, not cloned: the request is not used for them again.
    let mut permissions = std::mem::take(&mut request.permissions);
    permissions.sort();
    permissions.dedup();
    let credential = presented_credential(&request)?;
    let ip = request
        .ip
        .as_deref()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| Problem::invalid("ip", "must be an IPv4 or IPv6 address"))
        })
        .transpose()?;
    if let Some(env) = &request.environment {
        validate_environment_name(env).map_err(super::field("environment"))?;
    }
    if let Some(customer) = &request.customer_id {
        validate_customer_id(customer).map_err(super::field("customer_id"))?;
    }
    if request
        .origin
        .as_ref()
        .is_some_and(|o| o.len() > MAX_ORIGIN_LEN)
    {
        return Err(Problem::invalid(
            "origin",
            format!("at most {MAX_ORIGIN_LEN} characters"),
        ));
    }
    let cost = request.cost.unwrap_or(1);
    check_amount(cost).map_err(super::field("cost"))?;
    let input = VerifyInput {
        account_id,
        credential,
        environment: request.environment.as_deref(),
        permissions: &permissions,
        ip,
        customer_id: request.customer_id.as_deref(),
        origin: request.origin.as_deref(),
        request_line: None,
        cost,
    };
    let verdict = state.verifier.verify(input, now_ms()).await?;
    respond(verdict)
}

/// Exactly one of the three ways to pass the key. `None` when the forwarded
/// header is unreadable: that is the client's malformed key, not a bad call.
fn presented_credential(request: &VerifyRequest) -> ApiResult<Option<PresentedCredential<'_>>> {
    match (&request.key, &request.authorization, &request.x_api_key) {
        (Some(key), None, None) => Ok(Some(PresentedCredential::bare(key))),
        (None, Some(header), None) => Ok(PresentedCredential::from_authorization(header)),
        (None, None, Some(key)) => Ok(Some(PresentedCredential::bare(key))),
        (None, None, None) => Err(Problem::invalid(
            "key",
            "give the key as key, authorization or x_api_key",
        )),
        _ => Err(Problem::invalid(
            "key",
            "give only one of key, authorization and x_api_key",
        )),
    }
}

/// A typical verdict's JSON (a key with a few permissions and a rate
/// limit) fits, so the body is written without growing its buffer.
const VERDICT_CAPACITY: usize = 512;

fn respond(verdict: Verdict) -> ApiResult<Response> {
    let json = verdict_json(&verdict).map_err(|error| {
        tracing::error!(%error, "could not serialize a verdict");
        Problem::internal()
    })?;
    let mut response = Response::new(axum::body::Body::from(json));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(state) = &verdict.rate_limit {
        state.write_headers(headers);
    }
    Ok(response)
}

/// The verdict's JSON. The key object comes rendered from the cache entry,
/// which renders it once: it was most of the serializing work per request.
fn verdict_json(verdict: &Verdict) -> serde_json::Result<Vec<u8>> {
    let key = match &verdict.key {
        Some(cached) => Some(cached.verdict_key(render_verdict_key)?),
        None => None,
    };
    Ok(write_verdict(VerdictBody {
        valid: verdict.code.is_valid(),
        code: verdict.code,
        status: verdict.code.http_status(),
        key,
        rate_limit: verdict.rate_limit.map(|s| RateLimitView {
            limit: s.limit,
            remaining: s.remaining,
            reset_seconds: s.reset_seconds,
        }),
        credits: verdict.credits.map(|draw| CreditsLeftView {
            remaining: draw.remaining,
        }),
    }))
}

/// `body` as serde_json writes it, written directly into a sized `Vec`:
/// through serde it cost ~2,000 instructions a request, each of its nine
/// field names escaped on the way out. The shape is fixed, and its only
/// strings are the code (`snake_case` ASCII, nothing to escape) and the
/// key, which is JSON already; `verdicts_are_written_as_serde_writes_them`
/// holds it to serde_json's rendering of every variant.
fn write_verdict(body: VerdictBody<'_>) -> Vec<u8> {
    let mut json = Vec::with_capacity(VERDICT_CAPACITY);
    let mut digits = itoa::Buffer::new();
    let mut number = |json: &mut Vec<u8>, n: u64| json.extend(digits.format(n).as_bytes());
    json.extend(match body.valid {
        true => b"{\"valid\":true,\"code\":\"".as_slice(),
        false => b"{\"valid\":false,\"code\":\"",
    });
    json.extend(body.code.as_str().as_bytes());
    json.extend(b"\",\"status\":");
    number(&mut json, body.status.into());
    json.extend(b",\"key\":");
    json.extend(body.key.map_or("null", RawValue::get).as_bytes());
    json.extend(b",\"rate_limit\":");
    match body.rate_limit {
        Some(state) => {
            json.extend(b"{\"limit\":");
            number(&mut json, state.limit.into());
            json.extend(b",\"remaining\":");
            number(&mut json, state.remaining.into());
            json.extend(b",\"reset_seconds\":");
            number(&mut json, state.reset_seconds);
            json.push(b'}');
        }
        None => json.extend(b"null"),
    }
    json.extend(b",\"credits\":");
    match body.credits {
        Some(credits) => {
            json.extend(b"{\"remaining\":");
            number(&mut json, credits.remaining);
            json.push(b'}');
        }
        None => json.extend(b"null"),
    }
    json.push(b'}');
    json
}

fn render_verdict_key(record: &VerificationRecord) -> serde_json::Result<Box<RawValue>> {
    let k = &record.key;
    serde_json::value::to_raw_value(&VerdictKey {
        id: &k.id,
        name: &k.name,
        workspace_id: &k.workspace_id,
        environment: &k.environment,
        kind: k.kind,
        customer_id: k.customer_id.as_deref(),
        permissions: &k.permissions,
        meta: &k.meta,
        expires_at: from_ms_opt(k.expires_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_written_as_serde_writes_them() {
        let key = serde_json::value::to_raw_value(&serde_json::json!({
            "id": "key_1", "meta": {"plan": "pro \"quoted\""}, "permissions": ["a:read"]
        }))
        .unwrap();
        let rate_limits = [None, Some((0, 0, 0)), Some((u32::MAX, u32::MAX, u64::MAX))];
        let credits = [None, Some(0), Some(u64::MAX)];
        for code in &Code::ALL {
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            for key in [None, Some(key.as_ref())] {
                for rate_limit in rate_limits {
                    for left in credits {
                        let body = || VerdictBody {
                            valid: code.is_valid(),
                            code: *code,
                            status: code.http_status(),
                            key,
                            rate_limit: rate_limit.map(|(limit, remaining, reset_seconds)| {
                                RateLimitView {
                                    limit,
                                    remaining,
                                    reset_seconds,
                                }
                            }),
                            credits: left.map(|remaining| CreditsLeftView { remaining }),
                        };
                        let written = write_verdict(body());
                        let expected = serde_json::to_vec(&body()).unwrap();
                        assert_eq!(
                            String::from_utf8(written).unwrap(),
                            String::from_utf8(expected).unwrap()
                        );
                    }
                }
            }
        }
    }
}
