//! Rate limits shared through Redis by two nodes of one deployment, and the
//! fallback to local limits when Redis is unreachable.
//!
//! Redis is expected at `redis://127.0.0.1:6379` (override with
//! `KEYWARD_TEST_REDIS_URL`). Outside CI, `KEYWARD_TEST_SKIP_REDIS=1` skips
//! the shared-limit test loudly when it is down; otherwise it fails.

mod common;

use common::TestServer;
use keyward_server::ServerConfig;
use keyward_server::shared_limit::SharedLimits;
use keyward_store::testing::Backend;
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const LIMIT: usize = 300;

async fn redis_url() -> Option<String> {
    let url =
        std::env::var("KEYWARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = match redis::Client::open(url.as_str()) {
        Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
        Err(_) => false,
    };
    let may_skip = std::env::var("KEYWARD_TEST_SKIP_REDIS").as_deref() == Ok("1")
        && std::env::var("CI").as_deref() != Ok("true");
    match (reachable, may_skip) {
        (true, _) => Some(url),
        (false, true) => {
            eprintln!("SKIPPED: Redis unreachable at {url} (KEYWARD_TEST_SKIP_REDIS=1)");
            None
        }
        (false, false) => panic!(
            "Redis unreachable at {url}: start it, set KEYWARD_TEST_REDIS_URL, \
             or (outside CI) KEYWARD_TEST_SKIP_REDIS=1"
        ),
    }
}

/// Keys of this test run only, so parallel runs never share a limiter.
fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("keyward-test:{}:{nanos}", std::process::id())
}

fn shared(url: &str, prefix: &str) -> ServerConfig {
    ServerConfig {
        shared_limits: Some(Arc::new(SharedLimits::new(url, prefix).unwrap())),
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_limit_within_one_percent() {
    let Some(url) = redis_url().await else {
        return;
    };
    let prefix = unique_prefix();
    // Each node has its own Redis client, as separate processes would.
    let s = TestServer::start_with(Backend::Sqlite, shared(&url, &prefix))
        .await
        .unwrap();
    let other = s.another_node(shared(&url, &prefix)).await;
    // An hour's window: the few tokens refilled while the test runs stay
    // far below 1 % of the limit.
    let (_, secret) = s
        .issue(json!({"name": "shared", "environment": "production",
                      "rate_limit": {"limit": LIMIT, "window_seconds": 3600}}))
        .await;

    // Each node connected to Redis and loaded the script before it served
    // (`SharedLimits::connect`), so no check of the burst spends its 100 ms
    // budget connecting. The burst alternates nodes, at most 16 in flight:
    // enough to interleave the two nodes' checks, not so many that a debug
    // build on two shared cores queues a check past that timeout (which
    // falls back to local limits, by design, and would measure the
    // fallback instead).
    let s = Arc::new(s);
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..2 * LIMIT {
        let s = s.clone();
        let base = if n % 2 == 0 {
            s.base.clone()
        } else {
            other.base.clone()
        };
        let secret = secret.clone();
        let permit = gate.clone().acquire_owned().await.unwrap();
        requests.spawn(async move {
            let code = s.code_on(&base, json!({"key": secret})).await;
            drop(permit);
            code
        });
    }
    let codes = requests.join_all().await;
    let allowed = codes.iter().filter(|c| *c == "valid").count();
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    println!("allowed {allowed} of {} (limit {LIMIT})", codes.len());
    assert_eq!(allowed + limited, codes.len(), "{codes:?}");
    let tolerance = LIMIT / 100;
    assert!(
        (LIMIT - tolerance..=LIMIT + tolerance).contains(&allowed),
        "allowed {allowed}, limit {LIMIT}"
    );
}

/// The shared limit reports its state (remaining, reset, retry) as the
/// in-process one does: the Redis script runs the core's GCRA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_limit_reports_what_the_local_one_does() {
    let Some(url) = redis_url().await else {
        return;
    };
    let local = TestServer::start(Backend::Sqlite).await.unwrap();
    let shared = TestServer::start_with(Backend::Sqlite, shared(&url, &unique_prefix()))
        .await
        .unwrap();
    for s in [&local, &shared] {
        let (_, secret) = s
            .issue(json!({"name": "limited", "environment": "production",
                          "rate_limit": {"limit": 2, "window_seconds": 60}}))
            .await;
        let request = json!({"key": secret});
        let (first, headers) = s.verify(request.clone()).await;
        // Exactly one interval ahead, whatever the clock says.
        assert_eq!(
            first["rate_limit"],
            json!({"limit": 2, "remaining": 1, "reset_seconds": 30})
        );
        assert_eq!(headers["ratelimit"], "\"key\";r=1;t=30");
        assert_eq!(s.code(request.clone()).await, "valid");
        let (third, headers) = s.verify(request).await;
        assert_eq!(third["code"], "rate_limited");
        assert_eq!(third["rate_limit"]["remaining"], 0);
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        let reset = third["rate_limit"]["reset_seconds"].as_u64().unwrap();
        // Two intervals ahead less the test's own time; one comes back first.
        assert!((1..=30).contains(&retry), "retry after {retry}");
        assert!((31..=60).contains(&reset), "reset in {reset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_falls_back_to_local_limits() {
    // Nothing listens on port 1: every shared check fails fast.
    let s = TestServer::start_with(Backend::Sqlite, shared("redis://127.0.0.1:1", "unused"))
        .await
        .unwrap();
    let (_, secret) = s
        .issue(json!({"name": "local", "environment": "production",
                      "rate_limit": {"limit": 2, "window_seconds": 3600}}))
        .await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(s.code(json!({"key": secret})).await);
    }
    assert_eq!(codes, ["valid", "valid", "rate_limited"]);
    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keyward_ratelimit_redis_fallbacks_total"),
        "{metrics}"
    );
}
