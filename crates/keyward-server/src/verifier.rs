//! The verification engine: parse → look up (cache, then store) → decide →
//! rate-limit → count and log the outcome (the log also carries last use).
//! The HTTP verify endpoint, the gateway and the embeddable tower layer
//! (`embed`) are thin adapters over it.
//!
//! Nothing here writes storage: last use and request logs go to buffers
//! flushed in batches, and lookups are served from [`VerifyCache`] once warm.

use crate::cache::{CachedKey, Lookup, Ticket, VerifyCache};
use crate::outage::{Outage, Read};
use crate::ratelimit::{RateLimitState, RateLimits};
use crate::request_logs::{
    AskedPermissions, LoggedRequest, PendingLog, RequestLogBuffer, Unmatched,
};
use crate::shared_limit::SharedLimits;
use crate::tally::{self, LatencyHistogram, Tallies};
use crate::telemetry as m;
use governor::clock::{Clock, DefaultClock, QuantaInstant, Reference};
use keyward_core::key::could_be_imported_secret;
use keyward_core::verify::{Code, Demand, KeyFacts, PresentedCredential, decide};
use keyward_core::{EnvTag, KeyFormat, KeyHash, PermissionName, RateLimitPolicy};
use keyward_store::{CreditDraw, Store, StoreResult, VerificationRecord};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the platform asks about one of its requests.
#[derive(Debug)]
pub struct VerifyInput<'a> {
    /// The account the caller acts for: keys of any other account are unknown to it.
    pub account_id: &'a str,
    /// `None` when the client sent no credential the platform could read.
    pub credential: Option<PresentedCredential<'a>>,
    pub environment: Option<&'a str>,
    pub permissions: &'a [PermissionName],
    pub ip: Option<IpAddr>,
    pub customer_id: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// The request verified, when the verifier sees it (gateway mode): its
    /// method and path go to the request log.
    pub request_line: Option<RequestLine<'a>>,
    /// What the request takes from a metered key's credits (1 unless the
    /// platform says otherwise; 0 only asks whether any are left).
    pub cost: u64,
}

/// A request's method and path, without its query (which may carry
/// secrets).
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// The outcome, with the key when the caller may see it (every outcome after
/// a successful lookup in the caller's own account).
#[derive(Debug)]
pub struct Verdict {
    pub code: Code,
    /// Shared with the cache: the verdict never copies the key. Derefs to
    /// the [`VerificationRecord`].
    pub key: Option<Arc<CachedKey>>,
    pub rate_limit: Option<RateLimitState>,
    /// A metered key's draw on its credits, when the request got that far.
    pub credits: Option<CreditDraw>,
}

impl Verdict {
    /// Refused because a metered key's credits could not cover the cost
    /// (the code is `rate_limited`, as SPEC §3 answers a quota).
    pub fn spent_credits(&self) -> bool {
        self.credits.is_some_and(|draw| !draw.allowed)
    }

    fn without_key(code: Code) -> Self {
        Self {
            code,
            key: None,
            rate_limit: None,
            credits: None,
        }
    }
}

pub struct Verifier {
    store: Arc<dyn Store>,
    format: KeyFormat,
    rate_limits: Arc<RateLimits>,
    logs: Arc<RequestLogBuffer>,
    cache: Arc<VerifyCache>,
    /// Limits shared by every node (Redis), when configured.
    shared_limits: Option<Arc<SharedLimits>>,
    metrics: VerifyMetrics,
    outage: Arc<Outage>,
    /// Credentials not in the deployment's format are looked up as
    /// imported keys' secrets (`ServerConfig::accept_imported_keys`).
    imported_keys: bool,
    /// Times the decision: the rate limiter's clock (with governor's
    /// default `quanta` feature, the CPU's TSC, cheaper to read than
    /// `Instant`'s `clock_gettime`).
    clock: DefaultClock,
}

/// Outcome counters and the latency histogram, in one row per thread (see
/// [`crate::tally`]): the code's counter at its discriminant (`Code::ALL`
/// is in that order), then the histogram.
#[derive(Default)]
struct VerifyMetrics {
    tallies: Tallies<{ LATENCY + LatencyHistogram::SLOTS }>,
}

/// Where the latency histogram starts in [`VerifyMetrics::tallies`].
const LATENCY: usize = Code::ALL.len();

impl VerifyMetrics {
    fn record(&self, code: Code, elapsed: Duration) {
        let row = self.tallies.row();
        row.add(code as usize, 1);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        LatencyHistogram::record(&row, LATENCY, nanos);
    }

    fn render(&self, out: &mut String) {
        let totals = self.tallies.totals();
        tally::header(
            out,
            m::VERIFICATIONS,
            "Verifications by outcome.",
            "counter",
        );
        for (code, count) in Code::ALL.iter().zip(totals) {
            tally::sample(out, m::VERIFICATIONS, &format!("code=\"{code}\""), count);
        }
        LatencyHistogram::render(
            &totals[LATENCY..],
            m::VERIFY_SECONDS,
            "Time in the verification engine, parse to verdict.",
            out,
        );
    }
}

impl Verifier {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        format: KeyFormat,
        logs: Arc<RequestLogBuffer>,
        cache: Arc<VerifyCache>,
        rate_limits: Arc<RateLimits>,
        shared_limits: Option<Arc<SharedLimits>>,
        imported_keys: bool,
    ) -> Self {
        Self {
            store,
            format,
            rate_limits,
            logs,
            cache,
            shared_limits,
            imported_keys,
            metrics: VerifyMetrics::default(),
            outage: Arc::default(),
            clock: DefaultClock::default(),
        }
    }

    pub fn cache(&self) -> &VerifyCache {
        &self.cache
    }

    /// Whether the store is failing, shared with the token lookup.
    pub fn outage(&self) -> &Arc<Outage> {
        &self.outage
    }

    /// The outcomes waiting for the next flush.
    pub fn request_logs(&self) -> &RequestLogBuffer {
        &self.logs
    }

    /// Appends the verify path's series (outcomes, latency, cache lookups)
    /// to a `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(out);
        self.cache.render_metrics(out);
    }

    /// Runs every check of SPEC §3 in order, then counts and logs the
    /// outcome. A store failure is an error, not a denial: the caller must
    /// not mistake an outage for a bad key (and it is not logged as one).
    ///
    /// A key found in the cache, without a shared limit or credits, is
    /// answered by plain function calls ([`Self::check_in_memory`]): the
    /// asynchronous steps — a store read, Redis, a credit draw — only run
    /// when one is needed, so the common case pays nothing for their
    /// (large) future's state.
    pub async fn verify(&self, input: VerifyInput<'_>, now_ms: i64) -> StoreResult<Verdict> {
        let started = self.clock.now();
        let judgement = match self.check_in_memory(&input, started, now_ms) {
            Known::Judged(judgement) => judgement,
            Known::Miss(miss) => self.read_missed(miss, &input, started, now_ms).await?,
        };
        let verdict = match judgement {
            Judgement::Final(verdict) => verdict,
            Judgement::Limits(record) => {
                self.limit_and_draw(record, &input, started, now_ms).await?
            }
        };
        let answered = self.clock.now();
        let elapsed = Duration::from(answered.duration_since(started));
        self.metrics.record(verdict.code, elapsed);
        self.logs
            .record(pending_log(&input, &verdict, now_ms, answered, elapsed));
        Ok(verdict)
    }

    /// Everything the cache can answer: the credential's shape, its key's
    /// record, the checks, and the in-process rate limit. `started` is when
    /// the verification began on the monotonic clock, `now_ms` on the wall
    /// clock.
    fn check_in_memory(
        &self,
        input: &VerifyInput<'_>,
        started: QuantaInstant,
        now_ms: i64,
    ) -> Known {
        let Some(credential) = input.credential.as_ref() else {
            return Known::Judged(Judgement::without_key(Code::MalformedKey));
        };
        let secret = credential.expose_secret();
        // `shaped` is kept for its checksum, asked only of a miss: a cached
        // record's hash is of an issued key, checksum and all, and a hash
        // is remembered as unknown only after its key passed the checksum.
        let (hash, shaped, not_found) = match self.format.parse_shape(secret) {
            // The constant, not `EnvTag::management()`, which allocates a String.
            Ok(shaped) if shaped.env_tag() == EnvTag::MANAGEMENT => {
                // A management token is not an API key of the platform.
                return Known::Judged(Judgement::without_key(Code::UnknownKey));
            }
            Ok(shaped) => (shaped.hash(), Some(shaped), Code::UnknownKey),
            // Not in this deployment's format: the secret of a key imported
            // from elsewhere, when the deployment takes them and it could
            // be one (then, and only then, a malformed credential costs a
            // lookup; negative answers are cached like any other).
            Err(_) if self.imported_keys && could_be_imported_secret(secret) => {
                (KeyHash::of(secret), None, Code::MalformedKey)
            }
            Err(_) => return Known::Judged(Judgement::without_key(Code::MalformedKey)),
        };
        match self.cache.key(hash.as_bytes(), now_ms) {
            Lookup::Hit(record) => {
                Known::Judged(self.judge(record, not_found, input, started, now_ms))
            }
            Lookup::Unknown => Known::Judged(Judgement::without_key(not_found)),
            // Mistyped: never asked of the store.
            Lookup::Miss(..) if shaped.is_some_and(|key| key.check_checksum().is_err()) => {
                Known::Judged(Judgement::without_key(Code::MalformedKey))
            }
            Lookup::Miss(ticket, stale) => Known::Miss(Miss {
                hash,
                ticket,
                stale,
                not_found,
            }),
        }
    }

    /// Reads the record of a missed hash from the store (and caches it,
    /// found or not), or — the store being unavailable — takes the entry
    /// only past its TTL; then judges it.
    async fn read_missed(
        &self,
        miss: Miss,
        input: &VerifyInput<'_>,
        started: QuantaInstant,
        now_ms: i64,
    ) -> StoreResult<Judgement> {
        let Miss {
            hash,
            ticket,
            stale,
            not_found,
        } = miss;
        let hex = hash.to_hex();
        let read = self.store.find_key_for_verification(&hex);
        let record = match self.outage.read(stale, read).await? {
            Read::Stale(record) => record,
            Read::Fresh(Some(record)) => {
                self.cache
                    .insert_key(ticket, *hash.as_bytes(), Arc::new(record), now_ms)
            }
            Read::Fresh(None) => {
                self.cache.insert_unknown(ticket, *hash.as_bytes(), now_ms);
                return Ok(Judgement::without_key(not_found));
            }
        };
        Ok(self.judge(record, not_found, input, started, now_ms))
    }

    /// The checks of SPEC §3 on a found record, and the rate limit when
    /// it is this node's own. A key of another account is `not_found`.
    fn judge(
        &self,
        record: Arc<CachedKey>,
        not_found: Code,
        input: &VerifyInput<'_>,
        started: QuantaInstant,
        now_ms: i64,
    ) -> Judgement {
        if record.key.account_id != input.account_id {
            return Judgement::without_key(not_found);
        }
        let code = decide(&facts(&record), &demand(input, now_ms));
        if code == Code::UnknownKey {
            return Judgement::without_key(code);
        }
        let key = &record.key;
        if code == Code::Valid && (key.credits.is_some() || self.limit_is_shared(key.rate_limit)) {
            return Judgement::Limits(record);
        }
        let rate_limit = match (code, key.rate_limit) {
            (Code::Valid, Some(policy)) => Some(self.local_limit(&record, policy, started, now_ms)),
            _ => None,
        };
        let code = match rate_limit {
            Some(state) if !state.allowed() => Code::RateLimited,
            _ => code,
        };
        Judgement::Final(Verdict {
            code,
            key: Some(record),
            rate_limit,
            credits: None,
        })
    }

    /// Whether a key with this limit is counted in Redis (when reachable).
    fn limit_is_shared(&self, limit: Option<RateLimitPolicy>) -> bool {
        limit.is_some() && self.shared_limits.is_some()
    }

    /// A valid key's limit when shared, then its credits when metered.
    async fn limit_and_draw(
        &self,
        record: Arc<CachedKey>,
        input: &VerifyInput<'_>,
        started: QuantaInstant,
        now_ms: i64,
    ) -> StoreResult<Verdict> {
        let rate_limit = match record.key.rate_limit {
            Some(policy) => Some(self.rate_limit(&record, policy, started, now_ms).await),
            None => None,
        };
        let code = match rate_limit {
            Some(state) if !state.allowed() => Code::RateLimited,
            _ => Code::Valid,
        };
        let credits = match (code, record.key.credits) {
            (Code::Valid, Some(_)) => self.draw_credits(&record, input, now_ms).await?,
            _ => None,
        };
        let code = match credits {
            // SPEC §3 answers a spent quota as it does a rate limit.
            Some(draw) if !draw.allowed => Code::RateLimited,
            _ => code,
        };
        Ok(Verdict {
            code,
            key: Some(record),
            rate_limit,
            credits,
        })
    }

    /// Takes the request's cost from a metered key's credits: the one store
    /// write on the verify path, because a balance shared by every node is
    /// exact only where they all write it (the store commits concurrent
    /// draws in batches). `None` when the key turned out not to be metered
    /// any more (the cache is older than the change).
    async fn draw_credits(
        &self,
        record: &CachedKey,
        input: &VerifyInput<'_>,
        now_ms: i64,
    ) -> StoreResult<Option<CreditDraw>> {
        let draw =
            self.store
                .draw_credits(&record.key.account_id, &record.key.id, input.cost, now_ms);
        // Never answered from the cache: during an outage a metered key's
        // verification fails (503) rather than spend credits it cannot count.
        match self.outage.read(None::<Infallible>, draw).await? {
            Read::Fresh(draw) => Ok(draw),
            Read::Stale(never) => match never {},
        }
    }

    /// Counts the request against the key's limit: the shared one when
    /// configured and reachable, else this node's own.
    async fn rate_limit(
        &self,
        cached: &CachedKey,
        policy: RateLimitPolicy,
        started: QuantaInstant,
        now_ms: i64,
    ) -> RateLimitState {
        let shared = match &self.shared_limits {
            Some(shared) => shared.check(&cached.key.id, policy).await,
            None => None,
        };
        shared.unwrap_or_else(|| self.local_limit(cached, policy, started, now_ms))
    }

    /// This node's limit for the key (reached through the cache entry once
    /// it holds it; `policy` is the entry's own), counted at the instant
    /// the verification started: no clock read of its own.
    fn local_limit(
        &self,
        cached: &CachedKey,
        policy: RateLimitPolicy,
        started: QuantaInstant,
        now_ms: i64,
    ) -> RateLimitState {
        let limiter = cached.limiter(|| self.rate_limits.limiter_for(&cached.key.id, policy));
        self.rate_limits.check_with(limiter, started, now_ms)
    }
}

/// What [`Verifier::check_in_memory`] learned without waiting.
enum Known {
    Judged(Judgement),
    /// The cache had no fresh answer for the credential's hash.
    Miss(Miss),
}

/// A hash to read from the store.
struct Miss {
    hash: KeyHash,
    ticket: Ticket,
    /// The entry only past its TTL, to answer if the store cannot be read.
    stale: Option<Arc<CachedKey>>,
    /// The outcome when no key of the caller's has the hash: `unknown_key`
    /// for a key in this deployment's format, `malformed_key` for a
    /// credential that was not one (looked up as an imported secret).
    not_found: Code,
}

/// A found key's checks, done.
enum Judgement {
    Final(Verdict),
    /// Valid so far: a shared rate limit or credits decide the rest.
    Limits(Arc<CachedKey>),
}

impl Judgement {
    fn without_key(code: Code) -> Self {
        Self::Final(Verdict::without_key(code))
    }
}

/// The outcome for the request log: only copies and pointers here; the
/// strings are built at flush time, off the verify path.
fn pending_log(
    input: &VerifyInput<'_>,
    verdict: &Verdict,
    now_ms: i64,
    answered: QuantaInstant,
    elapsed: Duration,
) -> PendingLog {
    let record = verdict.key.clone();
    PendingLog {
        at: now_ms,
        answered,
        // With a record, its account and environment are the ones logged.
        unmatched: record.is_none().then(|| {
            Box::new(Unmatched {
                account_id: input.account_id.to_owned(),
                environment: input.environment.map(str::to_owned),
            })
        }),
        permissions: AskedPermissions::new(record.as_deref().map(|r| &**r), input.permissions),
        request: input.request_line.map(LoggedRequest::new),
        record,
        ip: input.ip,
        code: verdict.code,
        latency_us: i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
    }
}

fn facts(record: &VerificationRecord) -> KeyFacts<'_> {
    let key = &record.key;
    KeyFacts {
        id: &key.id,
        status: key.status,
        expires_at_ms: key.expires_at,
        secret_expires_at_ms: record.replaced_secret_expires_at,
        environment: &key.environment,
        workspace_allowlist: &record.workspace_allowlist,
        key_allowlist: &key.allowed_ips,
        allowed_origins: &key.allowed_origins,
        permissions: &key.permissions,
        customer_id: key.customer_id.as_deref(),
    }
}

fn demand<'a>(input: &'a VerifyInput<'a>, now_ms: i64) -> Demand<'a> {
    Demand {
        claimed_id: input
            .credential
            .as_ref()
            .and_then(PresentedCredential::claimed_id),
        environment: input.environment,
        permissions: input.permissions,
        ip: input.ip,
        customer_id: input.customer_id,
        origin: input.origin,
        now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counters_are_indexed_by_discriminant() {
        for (index, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index, "{code}");
        }
    }
}
