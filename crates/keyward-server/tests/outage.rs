//! SPEC §6: while the store is unavailable, keys already cached keep
//! verifying past their TTL (within the outage grace); keys never seen and
//! admin writes fail with a clear 503 and change nothing; once the store
//! answers again, everything is read fresh. The outage is real: the server
//! reaches PostgreSQL through a proxy the test cuts.

mod common;

use common::cut_proxy::CutProxy;
use common::{TestServer, eventually};
use keyward_core::{EnvTag, KeyFormat};
use keyward_server::ServerConfig;
use keyward_server::cache::CacheConfig;
use keyward_store::testing::{Backend, TestDatabase};
use rand_core::{OsRng, TryRngCore as _};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Entries go past their TTL almost at once; the grace outlasts the test.
const TTL: Duration = Duration::from_millis(50);

/// One outage at a time: the outage gauge is process-wide.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server on PostgreSQL behind a [`CutProxy`], with a key verified once
/// (so cached, with the owner's token), and a key never seen; `None` when
/// PostgreSQL is unavailable and skipping is allowed.
async fn serving_behind_a_proxy() -> Option<(TestServer, CutProxy, String, String)> {
    let db = TestDatabase::create_or_skip(Backend::Postgres).await?;
    let proxy = CutProxy::to_database(&db.url).await;
    let config = ServerConfig {
        cache: CacheConfig {
            ttl_ms: TTL.as_millis() as i64,
            outage_grace_ms: 600_000,
            ..CacheConfig::default()
        },
        ..ServerConfig::default()
    };
    let s = TestServer::start_on(db, &proxy.url, config).await;
    let remote_before = remote_invalidations(&s).await;
    let (_, secret) = s
        .issue(json!({"name": "cached", "environment": "production"}))
        .await;
    // The node also applies its own change when the store's notification
    // of it arrives, which voids what was cached before: cache the token
    // and key only after that (if the node subscribed in time to get it).
    for _ in 0..40 {
        if remote_invalidations(&s).await > remote_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.code(json!({"key": secret})).await, "valid");
    let never_seen = KeyFormat::default()
        .generate(&EnvTag::parse("live").unwrap(), &mut OsRng.unwrap_err())
        .expose()
        .to_owned();
    // Past the TTL, so that each lookup after this goes to the store first.
    tokio::time::sleep(TTL * 2).await;
    Some((s, proxy, secret, never_seen))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_ride_out_a_store_outage() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some((s, proxy, secret, never_seen)) = serving_behind_a_proxy().await else {
        return;
    };
    let asks = json!({"key": secret, "environment": "production"});
    proxy.cut();

    assert_eq!(
        s.code(asks.clone()).await,
        "valid",
        "the cached token and key answer"
    );
    let (status, verdict) = s.verify_privately(asks.clone()).await;
    assert_eq!(
        (status, verdict["code"].as_str()),
        (StatusCode::OK, Some("valid"))
    );
    let (status, problem) = s.verify_privately(json!({"key": never_seen})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
        "an outage is not an unknown key: {problem}"
    );
    let keys = format!("/v1/workspaces/{}/keys", s.owner.workspace_id);
    let (status, problem) = s
        .post(
            &keys,
            json!({"name": "during", "environment": "production"}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
        "{problem}"
    );
    let metrics = s.metrics().await;
    assert!(metrics.contains("keyward_store_outage 1"), "{metrics}");
    assert!(
        stale_answers(&metrics) >= 2,
        "the token's and the key's entries answered: {metrics}"
    );

    proxy.restore();
    let (_, verdict) = eventually(Duration::from_secs(20), || async {
        let answer = s.verify_privately(json!({"key": never_seen})).await;
        (answer.0 == StatusCode::OK).then_some(answer)
    })
    .await;
    assert_eq!(verdict["code"], "unknown_key");
    assert!(s.metrics().await.contains("keyward_store_outage 0"));
    let (status, listed) = s.get(&keys).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|key| key["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"during"),
        "the failed create left nothing: {names:?}"
    );
}

/// A partition drops packets instead of refusing them: without a time
/// budget for its store reads, a verification would wait for TCP to give up
/// (many minutes), far past the client's 20 s here; an admin request,
/// for a pooled connection (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_store_does_not_hold_verification_up() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some((s, proxy, secret, never_seen)) = serving_behind_a_proxy().await else {
        return;
    };
    proxy.stall();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let verify = |key: &str| {
        client
            .post(format!("{}/v1/verify", s.private_base))
            .json(&json!({"key": key}))
            .send()
    };
    let response = verify(&secret)
        .await
        .expect("an answer despite the partition");
    assert_eq!(response.status(), StatusCode::OK);
    let verdict: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        verdict["code"], "valid",
        "the cached key answers: {verdict}"
    );
    let response = verify(&never_seen)
        .await
        .expect("an answer despite the partition");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The admin API knows of the outage too: a write is refused at once,
    // rather than after the pool's 30 s wait for a connection.
    let create = client
        .post(format!(
            "{}/v1/workspaces/{}/keys",
            s.base, s.owner.workspace_id
        ))
        .bearer_auth(&s.owner.token)
        .json(&json!({"name": "during the partition", "environment": "production"}))
        .send()
        .await
        .expect("an answer despite the partition");
    assert_eq!(create.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(create.headers()["retry-after"], "1");

    proxy.restore();
    let verdict = eventually(Duration::from_secs(20), || async {
        let (status, verdict) = s.verify_privately(json!({"key": never_seen})).await;
        (status == StatusCode::OK).then_some(verdict)
    })
    .await;
    assert_eq!(verdict["code"], "unknown_key");
}

fn stale_answers(metrics: &str) -> u64 {
    sample(metrics, "keyward_cache_stale_answers_total ")
}

async fn remote_invalidations(s: &TestServer) -> u64 {
    let metrics = s.metrics().await;
    sample(
        &metrics,
        "keyward_cache_invalidations_total{reason=\"remote\"} ",
    )
}

/// The value of the sample whose line starts with `series`, 0 if absent.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
