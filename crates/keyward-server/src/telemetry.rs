//! Prometheus metrics, served at `/metrics`.
//!
//! The `metrics` facade's recorder is process-wide: every [`crate::Server`]
//! in a process (tests run several) reports into the same registry. The
//! names are the catalogue below; each is documented in docs/PERFORMANCE.md.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// `code` label: every verification outcome.
pub const VERIFICATIONS: &str = "keyward_verifications_total";
/// Time spent in the verification engine (parse to verdict).
pub const VERIFY_SECONDS: &str = "keyward_verify_duration_seconds";
/// `cache` (`key`, `token`) and `result` (`hit`, `negative_hit`, `miss`).
pub const CACHE_LOOKUPS: &str = "keyward_cache_lookups_total";
/// `reason` (`local`, `remote`): per-account invalidations applied.
pub const INVALIDATIONS: &str = "keyward_cache_invalidations_total";
/// `reason` (`local`, `remote`): per-key invalidations applied (a change of
/// one key's row and nothing else).
pub const KEY_INVALIDATIONS: &str = "keyward_cache_key_invalidations_total";
/// `reason` (`local`, `remote`): negative caches dropped because keys were
/// added (and nothing else changed).
pub const NEGATIVE_DROPS: &str = "keyward_cache_negative_drops_total";
/// Full flushes after the change feed reconnected.
pub const RESYNCS: &str = "keyward_cache_resyncs_total";
/// Commit (database clock) to applied on this node, for remote changes.
pub const INVALIDATION_LAG_SECONDS: &str = "keyward_invalidation_lag_seconds";
/// `buffer` (`usage`, `request_logs`): entries written per flush.
pub const FLUSH_BATCH_SIZE: &str = "keyward_flush_batch_size";
/// `buffer`: entries dropped because the buffer was full.
pub const DROPPED_ENTRIES: &str = "keyward_dropped_entries_total";
/// `buffer`: flushes that failed (their entries are kept for the next one).
pub const FLUSH_FAILURES: &str = "keyward_flush_failures_total";
/// `reason` (`error`, `timeout`, `backing_off`): shared (Redis) rate-limit
/// checks answered by the local limiter instead.
pub const REDIS_FALLBACKS: &str = "keyward_ratelimit_redis_fallbacks_total";
/// In-process rate limiters held after the last prune (keys used within
/// their window, or cached).
pub const RATE_LIMITERS: &str = "keyward_rate_limiters";
/// 1 while the store is failing and cached keys answer past their TTL
/// (see `outage`), else 0.
pub const STORE_OUTAGE: &str = "keyward_store_outage";
/// Verify-path lookups answered by a cache entry past its TTL because the
/// store was unavailable.
pub const STALE_ANSWERS: &str = "keyward_cache_stale_answers_total";
/// `outcome` (`forwarded`, `denied`, `refused`, `upstream_unavailable`,
/// `upstream_timeout`): gateway requests. `denied` is a verification
/// refusal (its code is in `keyward_verifications_total`); `refused` is
/// a request no route takes or with a refused path.
pub const GATEWAY_REQUESTS: &str = "keyward_gateway_requests_total";
/// `label` (`true_positive`, `false_positive`): secrets GitHub's secret
/// scanning reported found in public.
pub const LEAK_ALERTS: &str = "keyward_leak_alerts_total";
/// Request logs deleted by the retention purge.
pub const LOGS_PURGED: &str = "keyward_request_logs_purged_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let sizes = [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(FLUSH_BATCH_SIZE.into()), &sizes)
                });
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                // Only an empty bucket list fails, and ours are constants.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Folds recorded histogram samples into their buckets every few seconds,
/// so memory does not grow between scrapes (the recorder leaves this to its
/// owner when not installed with its own HTTP listener).
pub async fn run_upkeep(
    handle: PrometheusHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticker.tick() => handle.run_upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}
