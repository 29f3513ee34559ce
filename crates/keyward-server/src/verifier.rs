//! The verification engine: parse → look up (cache, then store) → decide →
//! rate-limit → count and log the outcome (the log also carries last use).
//! The HTTP verify endpoint, the gateway and the embeddable tower layer
//! (`embed`) are thin adapters over it.
//!
//! Nothing here writes storage: last use and request logs go to buffers
//! flushed in batches, and lookups are served from [`VerifyCache`] once warm.

use crate::cache::{CachedKey, Lookup, VerifyCache};
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
    pub async fn verify(&self, input: VerifyInput<'_>, now_ms: i64) -> StoreResult<Verdict> {
        let started = self.clock.now();
        let verdict = self.check(&input, started, now_ms).await?;
        let answered = self.clock.now();
        let elapsed = Duration::from(answered.duration_since(started));
        self.metrics.record(verdict.code, elapsed);
        self.logs
            .record(pending_log(&input, &verdict, now_ms, answered, elapsed));
        Ok(verdict)
    }

    /// `started` is when the verification began on the monotonic clock,
    /// `now_ms` on the wall clock.
    async fn check(
        &self,
        input: &VerifyInput<'_>,
        started: QuantaInstant,
        now_ms: i64,
    ) -> StoreResult<Verdict> {
        let Some(credential) = input.credential.as_ref() else {
            return Ok(Verdict::without_key(Code::MalformedKey));
        };
        let record = match self.format.parse_shape(credential.expose_secret()) {
            // The constant, not `EnvTag::management()`, which allocates a String.
            Ok(shaped) if shaped.env_tag() == EnvTag::MANAGEMENT => {
                // A management token is not an API key of the platform.
                return Ok(Verdict::without_key(Code::UnknownKey));
            }
            Ok(shaped) => {
                let hash = shaped.hash();
                match self
                    .lookup(hash, || shaped.check_checksum().is_ok(), now_ms)
                    .await?
                {
                    Found::Key(record) if record.key.account_id == input.account_id => record,
                    Found::Key(_) | Found::Nothing => {
                        return Ok(Verdict::without_key(Code::UnknownKey));
                    }
                    Found::Mistyped => return Ok(Verdict::without_key(Code::MalformedKey)),
                }
            }
            Err(_) => match self.find_imported(input, now_ms).await? {
                Some(record) => record,
                None => return Ok(Verdict::without_key(Code::MalformedKey)),
            },
        };
        let code = decide(&facts(&record), &demand(input, credential, now_ms));
        if code == Code::UnknownKey {
            return Ok(Verdict::without_key(code));
        }
        let rate_limit = match (code, record.key.rate_limit) {
            (Code::Valid, Some(policy)) => {
                Some(self.rate_limit(&record, policy, started, now_ms).await)
            }
            _ => None,
        };
        let code = match rate_limit {
            Some(state) if !state.allowed() => Code::RateLimited,
            _ => code,
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

    /// A credential not in this deployment's format: the secret of a key
    /// imported from elsewhere, when the deployment takes them and it could
    /// be one. `None` — the credential is malformed — otherwise, and when
    /// no key of the account has it. Only then does a malformed credential
    /// cost a lookup (negative answers are cached like any other).
    async fn find_imported(
        &self,
        input: &VerifyInput<'_>,
        now_ms: i64,
    ) -> StoreResult<Option<Arc<CachedKey>>> {
        let Some(secret) = input.credential.as_ref().map(|c| c.expose_secret()) else {
            return Ok(None);
        };
        if !self.imported_keys || !could_be_imported_secret(secret) {
            return Ok(None);
        }
        Ok(
            match self.lookup(KeyHash::of(secret), || true, now_ms).await? {
                Found::Key(record) if record.key.account_id == input.account_id => Some(record),
                Found::Key(_) | Found::Nothing | Found::Mistyped => None,
            },
        )
    }

    /// Counts the request against the key's limit: the shared one when
    /// configured and reachable, else this node's own (reached through the
    /// cache entry once it holds it; `policy` is the entry's own) at the
    /// instant the verification started: no clock read of its own.
    async fn rate_limit(
        &self,
        cached: &CachedKey,
        policy: RateLimitPolicy,
        started: QuantaInstant,
        now_ms: i64,
    ) -> RateLimitState {
        let key_id = &cached.key.id;
        let shared = match &self.shared_limits {
            Some(shared) => shared.check(key_id, policy).await,
            None => None,
        };
        shared.unwrap_or_else(|| {
            let limiter = cached.limiter(|| self.rate_limits.limiter_for(key_id, policy));
            self.rate_limits.check_with(limiter, started, now_ms)
        })
    }

    /// The record of the key's hash: from the cache, else from the store
    /// (and then cached, found or not), else — the store being unavailable
    /// — from an entry only past its TTL.
    ///
    /// `checksum_ok` is asked only when the cache has no answer: a cached
    /// record's hash is of an issued key, checksum and all, and a hash is
    /// remembered as unknown only after its key passed the checksum.
    async fn lookup(
        &self,
        hash: KeyHash,
        checksum_ok: impl FnOnce() -> bool,
        now_ms: i64,
    ) -> StoreResult<Found> {
        let (ticket, stale) = match self.cache.key(hash.as_bytes(), now_ms) {
            Lookup::Hit(record) => return Ok(Found::Key(record)),
            Lookup::Unknown => return Ok(Found::Nothing),
            Lookup::Miss(ticket, stale) => (ticket, stale),
        };
        if !checksum_ok() {
            return Ok(Found::Mistyped);
        }
        let hex = hash.to_hex();
        let read = self.store.find_key_for_verification(&hex);
        match self.outage.read(stale, read).await? {
            Read::Stale(record) => Ok(Found::Key(record)),
            Read::Fresh(Some(record)) => Ok(Found::Key(self.cache.insert_key(
                ticket,
                *hash.as_bytes(),
                Arc::new(record),
                now_ms,
            ))),
            Read::Fresh(None) => {
                self.cache.insert_unknown(ticket, *hash.as_bytes(), now_ms);
                Ok(Found::Nothing)
            }
        }
    }
}

/// What [`Verifier::lookup`] found for a well-shaped key.
enum Found {
    Key(Arc<CachedKey>),
    /// No key has this hash.
    Nothing,
    /// Not cached, and its checksum is wrong: never asked of the store.
    Mistyped,
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

fn demand<'a>(
    input: &'a VerifyInput<'a>,
    credential: &'a PresentedCredential<'a>,
    now_ms: i64,
) -> Demand<'a> {
    Demand {
        claimed_id: credential.claimed_id(),
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
