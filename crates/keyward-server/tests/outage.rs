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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_ride_out_a_store_outage() {
    let Some(db) = TestDatabase::create_or_skip(Backend::Postgres).await else {
        return;
    };
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
    let (_, secret) = s
        .issue(json!({"name": "cached", "environment": "production"}))
        .await;
    let asks = json!({"key": secret, "environment": "production"});
    assert_eq!(s.code(asks.clone()).await, "valid");
    let never_seen = KeyFormat::default()
        .generate(&EnvTag::parse("live").unwrap(), &mut OsRng.unwrap_err())
        .expose()
        .to_owned();

    // Past the TTL, so that each lookup below goes to the store first.
    tokio::time::sleep(TTL * 2).await;
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
    let metrics = metrics_text(&s).await;
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
    assert!(metrics_text(&s).await.contains("keyward_store_outage 0"));
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

async fn metrics_text(s: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn stale_answers(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("keyward_cache_stale_answers_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}
