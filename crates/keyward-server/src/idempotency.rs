//! `Idempotency-Key` on POST requests: a retried request with the same key
//! and the same body gets the first response replayed instead of creating a
//! second object. Keys are scoped to the account.
//!
//! Secrets are never stored, so a replayed response carries `"secret": null`
//! where the original carried the secret, and the header
//! `Idempotent-Replayed: true`; a client that lost the original response
//! rotates the key to get a new secret.

use crate::AppState;
use crate::auth::Principal;
use crate::extract::MAX_BODY_BYTES;
use crate::problem::Problem;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyward_store::IdempotencyClaim;
use sha2::{Digest, Sha256};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Responses are small JSON documents; anything larger is not replayable.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match handle(state, request, next).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn handle(state: AppState, request: Request, next: Next) -> Result<Response, Problem> {
    if request.method() != Method::POST || !request.headers().contains_key(HEADER) {
        return Ok(next.run(request).await);
    }
    let (mut parts, body) = request.into_parts();
    let Ok(principal) = Principal::from_request_parts(&mut parts, &state).await else {
        // Let the handler answer with the authentication problem: a caller
        // without a valid token learns nothing about its header first.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    };
    let idempotency_key = valid_key(&parts.headers)?;
    let body = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body must be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let account = principal.account_id.clone();
    match state
        .store
        .begin_idempotent(&account, &idempotency_key, &fingerprint)
        .await?
    {
        IdempotencyClaim::Completed { status, body } => Ok(replay(status, body)),
        IdempotencyClaim::InProgress => Err(Problem::conflict(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still being processed; retry later",
        )
        .with_field("Idempotency-Key")),
        IdempotencyClaim::Mismatch => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key",
        )
        .with_field("Idempotency-Key")),
        IdempotencyClaim::Claimed => {
            parts.extensions.insert(principal);
            let response = next.run(Request::from_parts(parts, Body::from(body))).await;
            remember(&state, &account, &idempotency_key, response).await
        }
    }
}

/// The request's key, if it is one this layer accepts. Verification is
/// exempt from the layer (routed outside it) because it changes nothing a
/// replay could protect.
fn valid_key(headers: &HeaderMap) -> Result<String, Problem> {
    headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|k| (1..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            Problem::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
            )
        })
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        b"\n",
        path.as_bytes(),
        b"\n",
        body,
    ] {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stores a successful response for replay (minus secrets); releases the
/// claim otherwise, since a failed request changed nothing.
async fn remember(
    state: &AppState,
    account: &str,
    key: &str,
    response: Response,
) -> Result<Response, Problem> {
    if !response.status().is_success() {
        state.store.abandon_idempotent(account, key).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_RESPONSE_BYTES)
        .await
        .map_err(|_| Problem::internal())?;
    let replayable = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map(|mut value| {
            redact_secrets(&mut value);
            value.to_string()
        })
        .unwrap_or_default();
    state
        .store
        .finish_idempotent(account, key, parts.status.as_u16(), &replayable)
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Every member named `secret`, at any depth, is a credential shown once.
fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, member) in map.iter_mut() {
                if name == "secret" {
                    *member = serde_json::Value::Null;
                } else {
                    redact_secrets(member);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "secret": "kw_live_x",
            "key": {"name": "a"},
            "primary": [{"secret": "kw_live_y", "id": "key_1"}]
        });
        redact_secrets(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"secret": null, "key": {"name": "a"}, "primary": [{"secret": null, "id": "key_1"}]})
        );
    }

    #[test]
    fn fingerprints_depend_on_path_and_body() {
        let a = fingerprint(&Method::POST, "/v1/workspaces", b"{}");
        assert_eq!(a, fingerprint(&Method::POST, "/v1/workspaces", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/workspaces", b"{ }"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/permissions", b"{}"));
    }
}
