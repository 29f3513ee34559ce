//! Two real `keyward serve` processes on one PostgreSQL schema, as a
//! multi-node deployment runs: a change made through one node reaches the
//! other's verification cache within a second (LISTEN/NOTIFY), measured and
//! printed; a key added on one node reaches the other as an addition, which
//! keeps the keys it cached.

mod common;

use common::{Serving, initialised};
use keyward_core::KeyHash;
use keyward_server::cache::key_changes_overlap;
use keyward_store::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The promise under test.
const PROPAGATION: Duration = Duration::from_secs(1);

async fn call(
    http: &reqwest::Client,
    token: &str,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.post(url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `probe` until it holds, returning how long it took; fails
/// after a generous deadline (the 1 s promise is checked on the result).
async fn lag_until(mut probe: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if probe().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the change never reached the other node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one sample of node `base`'s `/metrics` (0 when absent).
async fn metric(http: &reqwest::Client, base: &str, sample: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_other_within_a_second() {
    let Some(db) = TestDatabase::create_or_skip(Backend::Postgres).await else {
        return;
    };
    let created = initialised(&db.url, &["init"], "owner@example.com");
    let token = created["management_token"].as_str().unwrap().to_owned();
    let workspace = created["workspace_id"].as_str().unwrap();
    let serve = ["--accept-imported-keys"];
    let a = Serving::start_with(&db.url, "info", &serve);
    let b = Serving::start_with(&db.url, "info", &serve);
    let http = reqwest::Client::new();

    let (status, issued) = call(
        &http,
        &token,
        format!("{}/v1/workspaces/{workspace}/keys", a.base),
        Some(json!({"name": "shared", "environment": "production"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let key_id = issued["key"]["id"].as_str().unwrap().to_owned();
    let secret = issued["secret"].as_str().unwrap().to_owned();
    let verify_on_b = async || {
        let (status, verdict) = call(
            &http,
            &token,
            format!("{}/v1/verify", b.base),
            Some(json!({"key": secret})),
        )
        .await;
        assert_eq!(status, 200, "{verdict}");
        verdict["code"].as_str().unwrap().to_owned()
    };
    // Warm node B's caches (key and token) with a few verifications.
    for _ in 0..3 {
        assert_eq!(verify_on_b().await, "valid");
    }
    // B answers from its cache, so only a notification can tell it.
    let hits = r#"keyward_cache_lookups_total{cache="key",result="hit"}"#;
    assert!(metric(&http, &b.base, hits).await >= 2.0);

    let (status, body) = call(
        &http,
        &token,
        format!("{}/v1/keys/{key_id}/revoke", a.base),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lag = lag_until(async || verify_on_b().await == "key_revoked").await;
    println!("revocation reached the other node in {lag:?}");
    assert!(lag < PROPAGATION, "took {lag:?}");
    // A key's row changed: B dropped that key, not the account.
    let by_key = r#"keyward_cache_key_invalidations_total{reason="remote"}"#;
    assert!(metric(&http, &b.base, by_key).await >= 1.0);

    // A deleted management token stops working on the other node too.
    let (status, minted) = call(
        &http,
        &token,
        format!("{}/v1/management-tokens", a.base),
        Some(json!({"name": "ci", "permissions": ["keys:verify"]})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let second = minted["secret"].as_str().unwrap().to_owned();
    let token_id = minted["token"]["id"].as_str().unwrap();
    let verify_with_second = async || {
        call(
            &http,
            &second,
            format!("{}/v1/verify", b.base),
            Some(json!({"key": secret})),
        )
        .await
        .0
    };
    assert_eq!(verify_with_second().await, 200);
    let deleted = http
        .delete(format!("{}/v1/management-tokens/{token_id}", a.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let lag = lag_until(async || verify_with_second().await == 401).await;
    println!("token deletion reached the other node in {lag:?}");
    assert!(lag < PROPAGATION, "took {lag:?}");
    let by_account = r#"keyward_cache_invalidations_total{reason="remote"}"#;
    assert!(metric(&http, &b.base, by_account).await >= 1.0);

    // A key imported on A: B forgets that it saw the secret as unknown
    // (another system's key, presented before the import) and keeps the
    // account's cached keys, where any other change would drop them.
    let dropped = r#"keyward_cache_negative_drops_total{reason="remote"}"#;
    let drops = metric(&http, &b.base, dropped).await;
    let (status, hot_issued) = call(
        &http,
        &token,
        format!("{}/v1/workspaces/{workspace}/keys", a.base),
        Some(json!({"name": "hot", "environment": "production"})),
    )
    .await;
    assert_eq!(status, 201, "{hot_issued}");
    let code_on_b = async |key: &str| {
        let (status, verdict) = call(
            &http,
            &token,
            format!("{}/v1/verify", b.base),
            Some(json!({"key": key})),
        )
        .await;
        assert_eq!(status, 200, "{verdict}");
        verdict["code"].as_str().unwrap().to_owned()
    };
    let hot = hot_issued["secret"].as_str().unwrap();
    let legacy = "sk_live_51HxLegacyKey0aB9cD8eF7gH6iJ5kL4mN3";
    // The issue's own notification, applied before anything is counted.
    lag_until(async || metric(&http, &b.base, dropped).await > drops).await;
    assert_eq!(code_on_b(hot).await, "valid");
    assert_eq!(code_on_b(legacy).await, "malformed_key", "unknown");
    let misses = r#"keyward_cache_lookups_total{cache="key",result="miss"}"#;
    let before = metric(&http, &b.base, misses).await;
    let (status, body) = call(
        &http,
        &token,
        format!("{}/v1/workspaces/{workspace}/keys/import", a.base),
        Some(json!({"keys": [{"hash": KeyHash::of(legacy).to_hex(),
                              "name": "legacy", "environment": "production"}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let lag = lag_until(async || code_on_b(legacy).await == "valid").await;
    println!("an imported key reached the other node in {lag:?}");
    assert!(lag < PROPAGATION, "took {lag:?}");
    assert_eq!(code_on_b(hot).await, "valid");
    assert_eq!(
        metric(&http, &b.base, misses).await,
        before + 1.0,
        "only the imported key's first lookup missed"
    );
    assert!(metric(&http, &b.base, dropped).await > drops + 1.0);

    // Disabling the imported key on A reaches B as a change of that key:
    // B refuses it within a second and still answers its hot key from
    // cache (unless the two ids share a stripe, about one pair in 4,096).
    let legacy_id = body["data"][0]["id"].as_str().unwrap();
    let hot_id = hot_issued["key"]["id"].as_str().unwrap();
    let (status, disabled) = call(
        &http,
        &token,
        format!("{}/v1/keys/{legacy_id}/disable", a.base),
        None,
    )
    .await;
    assert_eq!(status, 200, "{disabled}");
    let before = metric(&http, &b.base, misses).await;
    let lag = lag_until(async || code_on_b(legacy).await == "key_inactive").await;
    println!("a disabled key reached the other node in {lag:?}");
    assert!(lag < PROPAGATION, "took {lag:?}");
    assert_eq!(code_on_b(hot).await, "valid");
    if !key_changes_overlap(hot_id, legacy_id) {
        assert_eq!(
            metric(&http, &b.base, misses).await,
            before + 1.0,
            "only the disabled key was read again"
        );
    }
    assert!(metric(&http, &b.base, by_key).await >= 2.0);
}
