//! GitHub's secret scanning partner alerts, the sender's side of trust:
//! GitHub finds a Keyward secret somewhere public (a repository, a gist, an
//! npm package) and POSTs it to `/v1/secret-scanning/github`, signed with
//! one of the ECDSA P-256 keys it publishes. [`GithubPublicKeys`] holds
//! those keys and checks each alert's signature; `api::secret_scanning`
//! acts on what the alert names.
//!
//! The keys are fetched from GitHub when an alert names one not yet known
//! (GitHub rotates them), at most once a minute: alerts are unauthenticated
//! until checked, and must not be able to make Keyward hammer GitHub.

use crate::problem::Problem;
use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, USER_AGENT};
use axum::http::{HeaderMap, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::gateway::UpstreamTls;

/// Where github.com publishes its secret scanning keys.
pub const GITHUB_PUBLIC_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";
/// The header naming the key an alert is signed with.
pub const KEY_IDENTIFIER_HEADER: &str = "github-public-key-identifier";
/// The header carrying the alert's signature: base64 of a DER ECDSA
/// signature over the raw body, with SHA-256.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// The shortest time between two fetches of the keys.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub's document is a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// GitHub's published signing keys, fetched on demand.
pub struct GithubPublicKeys {
    url: Uri,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    ring: Mutex<KeyRing>,
}

#[derive(Default)]
struct KeyRing {
    keys: HashMap<String, VerifyingKey>,
    last_fetch: Option<Instant>,
    last_fetch_failed: bool,
}

/// Why an alert's signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
enum KeyLookup {
    Unknown,
    /// The keys could not be fetched: GitHub should send the alert again.
    Unavailable,
}

impl GithubPublicKeys {
    /// Keys fetched from `url` (GitHub's, or a GitHub Enterprise Server's
    /// `/api/v3/meta/public_keys/secret_scanning`), over TLS checked
    /// against `tls`; `http://` is accepted for a URL on a private network.
    pub fn new(url: &str, tls: &UpstreamTls) -> Result<Self, String> {
        let url: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        if url.host().is_none() || !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(format!("{url}: not an http:// or https:// URL"));
        }
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(FETCH_TIMEOUT));
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls.client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
            ring: Mutex::new(KeyRing::default()),
        })
    }

    /// Accepts `body` only when the headers name a key GitHub publishes and
    /// carry that key's valid signature of exactly these bytes.
    pub(crate) async fn check_signature(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), Problem> {
        let (Some(key_id), Some(signature)) = (
            header(headers, KEY_IDENTIFIER_HEADER),
            header(headers, SIGNATURE_HEADER),
        ) else {
            return Err(refused(
                "the alert must carry GitHub-Public-Key-Identifier and GitHub-Public-Key-Signature",
            ));
        };
        let key = match self.verifying_key(key_id).await {
            Ok(key) => key,
            Err(KeyLookup::Unknown) => {
                return Err(refused(
                    "the alert is signed with a key GitHub does not publish",
                ));
            }
            Err(KeyLookup::Unavailable) => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "signing_keys_unavailable",
                    "GitHub's signing keys could not be fetched; send the alert again later",
                ));
            }
        };
        if signature_is_valid(&key, signature, body) {
            Ok(())
        } else {
            Err(refused("the alert's signature does not match its body"))
        }
    }

    async fn verifying_key(&self, id: &str) -> Result<VerifyingKey, KeyLookup> {
        let mut ring = self.ring.lock().await;
        if let Some(key) = ring.keys.get(id) {
            return Ok(*key);
        }
        if ring
            .last_fetch
            .is_some_and(|at| at.elapsed() < REFETCH_AFTER)
        {
            return Err(if ring.last_fetch_failed {
                KeyLookup::Unavailable
            } else {
                KeyLookup::Unknown
            });
        }
        ring.last_fetch = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                ring.keys = keys;
                ring.last_fetch_failed = false;
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "fetching GitHub's secret scanning keys failed");
                ring.last_fetch_failed = true;
                return Err(KeyLookup::Unavailable);
            }
        }
        ring.keys.get(id).copied().ok_or(KeyLookup::Unknown)
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let request = Request::get(self.url.clone())
            .header(USER_AGENT, concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json")
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            axum::body::to_bytes(Body::new(response.into_body()), MAX_DOCUMENT_BYTES),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        parse_public_keys(&body)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn refused(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "invalid_signature", detail)
}

/// GitHub's key document: `{"public_keys": [{"key_identifier", "key" (a
/// PEM SubjectPublicKeyInfo), "is_current"}]}`. Keys that do not parse as
/// P-256 are skipped (a future algorithm must not stop the others); a
/// document with none usable is refused.
fn parse_public_keys(document: &[u8]) -> Result<HashMap<String, VerifyingKey>, String> {
    #[derive(Deserialize)]
    struct Document {
        public_keys: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        key_identifier: String,
        key: String,
    }
    let document: Document =
        serde_json::from_slice(document).map_err(|e| format!("not GitHub's key document: {e}"))?;
    let keys: HashMap<String, VerifyingKey> = document
        .public_keys
        .into_iter()
        .filter_map(|entry| {
            let key = VerifyingKey::from_public_key_pem(&entry.key).ok()?;
            Some((entry.key_identifier, key))
        })
        .collect();
    if keys.is_empty() {
        return Err("the document holds no P-256 public key".into());
    }
    Ok(keys)
}

fn signature_is_valid(key: &VerifyingKey, signature_base64: &str, body: &[u8]) -> bool {
    use base64::Engine;
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature_base64) else {
        return false;
    };
    let Ok(signature) = Signature::from_der(&der) else {
        return false;
    };
    key.verify(body, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).expect("a valid scalar")
    }

    fn pem(key: &SigningKey) -> String {
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    fn sign(key: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_signature_holds_for_its_body_and_key_only() {
        let (key, other) = (signing_key(7), signing_key(8));
        let body = br#"[{"token":"kw_live_x","type":"keyward","url":"","source":"content"}]"#;
        let signature = sign(&key, body);
        assert!(signature_is_valid(key.verifying_key(), &signature, body));
        assert!(!signature_is_valid(other.verifying_key(), &signature, body));
        let mut changed = body.to_vec();
        changed[3] ^= 1;
        assert!(!signature_is_valid(
            key.verifying_key(),
            &signature,
            &changed
        ));
        for garbage in ["", "not base64!", "AAAA", &signature[..signature.len() - 4]] {
            assert!(
                !signature_is_valid(key.verifying_key(), garbage, body),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn the_key_document_keeps_the_p256_keys_it_can_read() {
        let (first, second) = (signing_key(1), signing_key(2));
        let document = serde_json::json!({"public_keys": [
            {"key_identifier": "a1", "key": pem(&first), "is_current": false},
            {"key_identifier": "b2", "key": pem(&second), "is_current": true},
            {"key_identifier": "c3", "key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "is_current": false},
        ]});
        let keys = parse_public_keys(document.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(&keys["a1"], first.verifying_key());
        assert_eq!(&keys["b2"], second.verifying_key());

        for bad in [
            "".to_owned(),
            "{}".to_owned(),
            r#"{"public_keys": []}"#.to_owned(),
            r#"{"public_keys": [{"key_identifier": "x", "key": "garbage"}]}"#.to_owned(),
        ] {
            assert!(parse_public_keys(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
