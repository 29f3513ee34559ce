//! GitHub's secret scanning alerts over HTTP: a signed alert revokes the
//! keys and deletes the management tokens it names, in any account, and is
//! answered with GitHub's labels; an unsigned or mis-signed one changes
//! nothing.

mod common;

use axum::routing::get;
use base64::Engine;
use common::{TestServer, serve_on_loopback};
use keyward_core::KeyHash;
use keyward_server::ServerConfig;
use keyward_server::gateway::UpstreamTls;
use keyward_server::secret_scanning::GithubPublicKeys;
use keyward_store::testing::Backend;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

const ALERTS: &str = "/v1/secret-scanning/github";

/// GitHub's side: its signing key, and its key document served on
/// loopback, counting fetches.
struct Github {
    key: SigningKey,
    keys_url: String,
    fetches: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Github {
    async fn start() -> Self {
        let key = SigningKey::from_slice(&[42; 32]).unwrap();
        let document = json!({"public_keys": [{
            "key_identifier": "github-key-1",
            "key": key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
            "is_current": true,
        }]})
        .to_string();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/meta/public_keys/secret_scanning",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let document = document.clone();
                async move { document }
            }),
        );
        let (base, stop) = serve_on_loopback(app).await;
        Self {
            key,
            keys_url: format!("{base}/meta/public_keys/secret_scanning"),
            fetches,
            _stop: stop,
        }
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            accept_imported_keys: true,
            ..config_fetching_from(&self.keys_url)
        }
    }

    /// POSTs `body` to `base` as GitHub would, signed with its key.
    async fn send(&self, base: &str, body: &str) -> (StatusCode, Value) {
        let signature = self.sign(body.as_bytes());
        alert(
            base,
            body.as_bytes(),
            Some("github-key-1"),
            Some(&signature),
        )
        .await
    }

    fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

fn config_fetching_from(url: &str) -> ServerConfig {
    let keys = GithubPublicKeys::new(url, &UpstreamTls::trusting_nobody().unwrap()).unwrap();
    ServerConfig {
        github_secret_scanning: Some(Arc::new(keys)),
        ..ServerConfig::default()
    }
}

/// POSTs an alert as GitHub does: no token, the two signature headers.
async fn alert(
    base: &str,
    body: &[u8],
    key_id: Option<&str>,
    signature: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{ALERTS}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(key_id) = key_id {
        request = request.header("Github-Public-Key-Identifier", key_id);
    }
    if let Some(signature) = signature {
        request = request.header("Github-Public-Key-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn found(token: &str, url: &str) -> Value {
    json!({"token": token, "type": "keyward_api_key", "url": url, "source": "content"})
}

fn label(token: &str, label: &str) -> Value {
    json!({"token_hash": KeyHash::of(token).to_hex(), "token_type": "keyward_api_key", "label": label})
}

async fn signed_alerts_revoke_what_they_find(backend: Backend) {
    let github = Github::start().await;
    let Some(s) = TestServer::start_with(backend, github.config()).await else {
        return;
    };
    let other = s.new_tenant().await;
    let (key, secret) = s
        .issue(json!({"name": "pushed to a public repo", "environment": "production"}))
        .await;
    let (other_key, other_secret) = s
        .issue_as(
            &other,
            json!({"name": "globex's", "environment": "production"}),
        )
        .await;
    let (status, token) = s
        .post(
            "/v1/management-tokens",
            json!({"name": "ci", "permissions": ["manage_api_credentials"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let management_token = token["secret"].as_str().unwrap().to_owned();
    // Cached as valid, so the alert must reach the cache too.
    assert_eq!(s.code(json!({"key": secret})).await, "valid");
    let not_ours = "kw_live_0000000000000000000000000000000000000A";
    // A key imported from the platform's previous system, in its format.
    let legacy = "sk_live_51HxLegacyKeyPushedToGitHub0001";
    let (status, imported) = s
        .post(
            &format!("/v1/workspaces/{}/keys/import", s.owner.workspace_id),
            json!({"keys": [{"hash": KeyHash::of(legacy).to_hex(), "name": "legacy", "environment": "production"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(
        github.fetches.load(Ordering::SeqCst),
        0,
        "fetched when first needed"
    );

    let url = "https://github.com/octo/app/blob/1f2e/.env";
    let body = json!([
        found(&secret, url),
        found(&other_secret, ""),
        found(not_ours, url),
        found(&management_token, url),
        found(legacy, url),
    ])
    .to_string();
    let (status, labels) = github.send(&s.base, &body).await;
    assert_eq!(status, StatusCode::OK, "{labels}");
    assert_eq!(
        labels,
        json!([
            label(&secret, "true_positive"),
            label(&other_secret, "true_positive"),
            label(not_ours, "false_positive"),
            label(&management_token, "true_positive"),
            label(legacy, "true_positive"),
        ])
    );
    assert_eq!(s.code(json!({"key": legacy})).await, "key_revoked");
    for leaked in [&secret, &other_secret, &management_token] {
        assert!(
            !labels.to_string().contains(leaked.as_str()),
            "the answer echoes no secret"
        );
    }

    // In effect at once, in each account.
    assert_eq!(s.code(json!({"key": secret})).await, "key_revoked");
    let key_path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    let (_, revoked) = s.get(&key_path).await;
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["leaked_at"].is_string(), "{revoked}");
    let (status, leaks) = s.get(&format!("{key_path}/leaks")).await;
    assert_eq!(status, StatusCode::OK);
    let leaks = leaks["data"].as_array().unwrap();
    assert_eq!(leaks.len(), 1);
    assert_eq!(
        (
            &leaks[0]["reporter"],
            &leaks[0]["location"],
            &leaks[0]["found_in"],
            &leaks[0]["secret"],
            &leaks[0]["action"]
        ),
        (
            &json!("github"),
            &json!(url),
            &json!("content"),
            &json!("current"),
            &json!("revoked")
        )
    );
    let other_path = format!("/v1/keys/{}", other_key["id"].as_str().unwrap());
    let (_, other_leaks) = s
        .call(
            &other.token,
            Method::GET,
            &format!("{other_path}/leaks"),
            None,
        )
        .await;
    assert_eq!(
        other_leaks["data"][0]["location"],
        Value::Null,
        "an empty URL is no location"
    );
    let (status, _) = s.get(&format!("{other_path}/leaks")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another account's key stays out of reach"
    );
    let (status, _) = s
        .call(&management_token, Method::GET, "/v1/workspaces", None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the leaked token no longer works"
    );

    // Audited in the owner's account as GitHub's doing, from its address.
    let (_, events) = s.get("/v1/audit-events?action=key.leaked").await;
    let events = events["data"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the key and the imported one");
    assert_eq!(events[0]["actor"]["ip"], "127.0.0.1");
    assert_eq!(events[0]["actor"]["member_id"], Value::Null);
    let (_, token_events) = s
        .get("/v1/audit-events?action=management_token.leaked")
        .await;
    assert_eq!(token_events["data"].as_array().unwrap().len(), 1);
    assert_eq!(github.fetches.load(Ordering::SeqCst), 1);
}

async fn unsigned_alerts_change_nothing(backend: Backend) {
    let github = Github::start().await;
    let Some(s) = TestServer::start_with(backend, github.config()).await else {
        return;
    };
    let (_, secret) = s
        .issue(json!({"name": "still fine", "environment": "production"}))
        .await;
    let body = json!([found(&secret, "")]).to_string();
    let signature = github.sign(body.as_bytes());
    let mut tampered = body.clone().into_bytes();
    tampered.extend_from_slice(b" ");
    let forger = SigningKey::from_slice(&[7; 32]).unwrap();
    let forged: Signature = forger.sign(body.as_bytes());
    let forged = base64::engine::general_purpose::STANDARD.encode(forged.to_der().as_bytes());
    for (what, body, key_id, signature) in [
        ("no headers", body.as_bytes(), None, None),
        ("no signature", body.as_bytes(), Some("github-key-1"), None),
        (
            "another body",
            tampered.as_slice(),
            Some("github-key-1"),
            Some(signature.as_str()),
        ),
        (
            "another signer",
            body.as_bytes(),
            Some("github-key-1"),
            Some(forged.as_str()),
        ),
        (
            "not base64",
            body.as_bytes(),
            Some("github-key-1"),
            Some("%%%"),
        ),
        (
            "a key GitHub does not publish",
            body.as_bytes(),
            Some("github-key-9"),
            Some(signature.as_str()),
        ),
        (
            "again in the same minute",
            body.as_bytes(),
            Some("github-key-8"),
            Some(signature.as_str()),
        ),
    ] {
        let (status, problem) = alert(&s.base, body, key_id, signature).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_signature")),
            "{what}: {problem}"
        );
    }
    assert_eq!(
        github.fetches.load(Ordering::SeqCst),
        1,
        "unknown key ids fetch GitHub's keys at most once a minute"
    );
    assert_eq!(s.code(json!({"key": secret})).await, "valid");

    // A signed body that is not a list of matches names the field.
    let bad = json!([{"type": "keyward_api_key"}]).to_string();
    let (status, problem) = github.send(&s.base, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("token"),
        "{problem}"
    );

    // A node without the feature does not take alerts; a node that cannot
    // fetch the keys asks GitHub to send again.
    let disabled = s.another_node(ServerConfig::default()).await;
    let unreachable = s
        .another_node(config_fetching_from("http://127.0.0.1:9/keys"))
        .await;
    for (node, expected) in [
        (
            &disabled,
            (StatusCode::NOT_FOUND, "secret_scanning_disabled"),
        ),
        (
            &unreachable,
            (StatusCode::SERVICE_UNAVAILABLE, "signing_keys_unavailable"),
        ),
    ] {
        let (status, problem) = github.send(&node.base, &body).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (expected.0, Some(expected.1))
        );
    }
    assert_eq!(s.code(json!({"key": secret})).await, "valid");
}

on_both_backends!(
    signed_alerts_revoke_what_they_find,
    unsigned_alerts_change_nothing
);
