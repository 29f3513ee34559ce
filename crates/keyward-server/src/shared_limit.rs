//! Rate limits shared by every node: one GCRA per key in Redis, advanced by
//! an atomic Lua script (the check and the update run as one step on the
//! Redis server, so two nodes can never both spend the last token).
//!
//! Redis is an accelerator, not a dependency: when it is unreachable, slow
//! (over `TIMEOUT`) or answers nonsense, the caller falls back to the
//! node's own in-process limiter and counts the fallback — verification
//! never fails because of Redis. After a failure, Redis is left alone for
//! `RETRY_AFTER` so that an outage does not add a timeout to every request.

use crate::ratelimit::RateLimitState;
use crate::telemetry as m;
use keyward_core::{GcraOutcome, RateLimitPolicy};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The longest a verification waits for Redis before using the local limit.
const TIMEOUT: Duration = Duration::from_millis(100);
/// How long Redis is skipped after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The script's ticks.
const MICROS_PER_SECOND: u64 = 1_000_000;

/// The core's GCRA ([`keyward_core::Gcra`]) in microseconds of Redis's
/// clock: `tat` (theoretical arrival time) per key. ARGV: emission interval
/// (µs), burst. Returns {allowed, tat after, remaining, µs to reset, µs to
/// retry}.
const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, tat, 0, tat - now, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, new_tat, math.floor((burst * interval - (new_tat - now)) / interval), new_tat - now, 0}
";

pub struct SharedLimits {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    started: Instant,
    /// Microseconds since `started` before which Redis is not tried.
    skip_until_us: AtomicI64,
}

impl SharedLimits {
    /// `prefix` namespaces the keys (`<prefix>:<key id>:<limit>/<window>`).
    /// Fails only on a malformed URL; an unreachable server is a fallback.
    pub fn new(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: OnceCell::new(),
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
            started: Instant::now(),
            skip_until_us: AtomicI64::new(0),
        })
    }

    /// Counts one request against the key's shared limit; `None` when Redis
    /// could not answer (the caller then uses its local limiter).
    pub async fn check(&self, key_id: &str, policy: RateLimitPolicy) -> Option<RateLimitState> {
        if self.elapsed_us() < self.skip_until_us.load(Ordering::Relaxed) {
            return self.fallback("backing_off");
        }
        match tokio::time::timeout(TIMEOUT, self.run(key_id, policy)).await {
            Ok(Ok(reply)) => Some(state(policy, reply)),
            Ok(Err(error)) => {
                tracing::warn!(%error, "shared rate limit unavailable; using the local limit");
                self.back_off();
                self.fallback("error")
            }
            Err(_) => {
                tracing::warn!("shared rate limit timed out; using the local limit");
                self.back_off();
                self.fallback("timeout")
            }
        }
    }

    /// Connects and loads the script before the first request needs them,
    /// so that a burst on a fresh node is not answered from local limits
    /// while the first checks connect inside their `TIMEOUT`. A failure is
    /// only logged: the checks connect lazily, as they would anyway.
    pub async fn connect(&self) {
        let connected = async {
            let mut connection = self.connection().await?.clone();
            self.script.load_async(&mut connection).await
        };
        if let Err(error) = connected.await {
            tracing::warn!(%error, "shared rate limits: Redis unreachable at start; will retry on use");
        }
    }

    async fn connection(&self) -> redis::RedisResult<&ConnectionManager> {
        self.connection
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                self.client.get_connection_manager_with_config(config)
            })
            .await
    }

    async fn run(&self, key_id: &str, policy: RateLimitPolicy) -> redis::RedisResult<[i64; 5]> {
        let connection = self.connection().await?;
        let interval_us =
            (u64::from(policy.window_seconds) * 1_000_000 / u64::from(policy.limit.max(1))).max(1);
        self.script
            .key(format!(
                "{}:{key_id}:{}/{}",
                self.prefix, policy.limit, policy.window_seconds
            ))
            .arg(interval_us)
            .arg(policy.limit.max(1))
            .invoke_async(&mut connection.clone())
            .await
    }

    fn fallback(&self, reason: &'static str) -> Option<RateLimitState> {
        metrics::counter!(m::REDIS_FALLBACKS, "reason" => reason).increment(1);
        None
    }

    fn back_off(&self) {
        let until = self.elapsed_us() + RETRY_AFTER.as_micros() as i64;
        self.skip_until_us.store(until, Ordering::Relaxed);
    }

    fn elapsed_us(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
}

/// The script's reply as the in-process limiter reports its own outcome.
fn state(
    policy: RateLimitPolicy,
    [allowed, tat, remaining, reset_us, retry_us]: [i64; 5],
) -> RateLimitState {
    let micros = |us: i64| u64::try_from(us).unwrap_or(0);
    let allowed = allowed == 1;
    let outcome = GcraOutcome {
        next_tat: allowed.then(|| micros(tat)),
        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
        reset_in: micros(reset_us),
        retry_in: (!allowed).then(|| micros(retry_us)),
    };
    RateLimitState::of(policy, outcome, MICROS_PER_SECOND)
}
