//! In-memory caches for the verify path: verification records and
//! management-token principals by SHA-256 hash, and a bounded negative cache
//! of hashes the store does not know.
//!
//! Invalidation is per account or per key, and O(1): every entry remembers
//! the generations of its account's stripe and of its key's stripe when it
//! was loaded, and invalidating an account (or a key) bumps that stripe, so
//! its entries read as misses from then on (and are evicted by the LRU in
//! due course). Accounts share `STRIPES` stripes and keys `KEY_STRIPES` by
//! hash, so a change may also drop entries of other accounts or keys in the
//! same stripe: extra misses, never stale hits. Every invalidation also
//! drops all negative entries (a change can, in principle, make a hash
//! known), and a [`VerifyCache::resync`] drops everything.
//!
//! A lookup that misses takes a [`Ticket`] before reading the store and
//! inserts only if no invalidation happened meanwhile, so a read that raced
//! with a change can never be cached past it.
//!
//! Memory: both caches are bounded by entry count (LRU-ish eviction by
//! `quick_cache`). A cached key costs its 32-byte hash, the entry header
//! (~48 bytes) and the shared record: about 400 bytes plus the lengths of its
//! name, ids, permissions, metadata and allowlists, and its rendered verdict
//! key once verified over HTTP (see docs/PERFORMANCE.md).
//! A negative entry costs about 80 bytes.
//!
//! An entry past its TTL but within the outage grace, and not invalidated,
//! comes back with the miss: the answer to give if the store cannot be read
//! (see `crate::outage`).
//!
//! In front of the key tier, each verifying thread keeps its own recent
//! hits ([`Recent`]): copies of the shared entries, stamps and all, checked
//! exactly as a shared entry is (current generation and epoch, within its
//! TTL), so they answer nothing the shared cache would not. A hit there
//! takes no lock: the shared tier's read lock (two atomic writes to a word
//! every thread shares, for a hot key on every request), its eviction
//! bookkeeping and the copy into the slot are what it saves. Memory:
//! `RECENT_SLOTS` slots of 80 bytes per verifying thread (320 KiB), each
//! holding its record alive until the slot is reused.

use crate::auth::Identity;
use crate::ratelimit::KeyLimiter;
use crate::tally::{self, Tallies};
use crate::telemetry as m;
use keyward_store::VerificationRecord;
use quick_cache::sync::Cache;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use thread_local::ThreadLocal;

/// Stripes of per-account generations.
const STRIPES: usize = 1024;

/// Stripes of per-key generations: more than accounts', as one account
/// holds many keys and a key's change should drop few others.
const KEY_STRIPES: usize = 4096;

/// Recent key hits each thread keeps (a power of two: slots are chosen by
/// the hash's first bytes). Direct-mapped, so keys in turn mostly hit
/// when they are well under this many: of 1,000 keys, each has a slot to
/// itself with a probability of (1 − 1/4096)^999 ≈ 78 % (with 256 slots,
/// as until the twenty-first session, ~2 %: nearly every lookup of such
/// traffic went on to the shared tier's lock).
const RECENT_SLOTS: usize = 4096;

/// How the caches are sized and how long an entry may be trusted without a
/// notification (a safety net: invalidation normally comes first).
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub key_capacity: usize,
    pub token_capacity: usize,
    pub unknown_capacity: usize,
    pub ttl_ms: i64,
    /// How long past its TTL an entry may still answer while the store is
    /// unavailable (0: not at all).
    pub outage_grace_ms: i64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            key_capacity: 100_000,
            token_capacity: 10_000,
            unknown_capacity: 100_000,
            ttl_ms: 60_000,
            outage_grace_ms: 300_000,
        }
    }
}

/// A cached verification record, with a handle to the key's in-process
/// rate limiter once a verification needed it: a warm verification then
/// reaches its limiter without a second (locked) map lookup by key id. The
/// limiter itself belongs to [`crate::ratelimit::RateLimits`], so an entry
/// reloaded after an invalidation or its TTL finds the same limiter (and
/// its state) again; only a changed policy starts a fresh one.
pub struct CachedKey {
    record: Arc<VerificationRecord>,
    limiter: OnceLock<Arc<KeyLimiter>>,
    /// The key's object in a verify response, rendered on first use: every
    /// field of it is the record's own, so it is the same for every
    /// verification the entry answers.
    verdict_key: OnceLock<Box<RawValue>>,
}

impl CachedKey {
    pub fn new(record: Arc<VerificationRecord>) -> Self {
        Self {
            record,
            limiter: OnceLock::new(),
            verdict_key: OnceLock::new(),
        }
    }

    /// The key's object in a verify response, rendered by `render` on
    /// first use.
    pub(crate) fn verdict_key<E>(
        &self,
        render: impl FnOnce(&VerificationRecord) -> Result<Box<RawValue>, E>,
    ) -> Result<&RawValue, E> {
        if let Some(rendered) = self.verdict_key.get() {
            return Ok(rendered);
        }
        let rendered = render(&self.record)?;
        Ok(self.verdict_key.get_or_init(|| rendered))
    }

    pub fn record(&self) -> &Arc<VerificationRecord> {
        &self.record
    }

    /// The key's limiter, fetched by `init` on first use.
    pub(crate) fn limiter(&self, init: impl FnOnce() -> Arc<KeyLimiter>) -> &KeyLimiter {
        self.limiter.get_or_init(init)
    }
}

impl Deref for CachedKey {
    type Target = VerificationRecord;

    fn deref(&self) -> &VerificationRecord {
        &self.record
    }
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The record's own Debug: it holds hashes and hints, never secrets.
        self.record.fmt(f)
    }
}

/// A management token's identity and when the token expires.
#[derive(Debug)]
pub struct CachedPrincipal {
    pub identity: Arc<Identity>,
    pub expires_at: Option<i64>,
    /// When this entry last had a use of its token noted (see
    /// [`Self::use_is_due`]).
    last_noted_use: AtomicI64,
}

/// How often a token's use is noted for its `last_used_at`, per cached
/// entry: last use to the minute, for one atomic load on most requests.
pub const TOKEN_USE_EVERY_MS: i64 = 60_000;

impl CachedPrincipal {
    pub fn new(identity: Identity, expires_at: Option<i64>) -> Self {
        Self {
            identity: Arc::new(identity),
            expires_at,
            last_noted_use: AtomicI64::new(0),
        }
    }

    /// Whether a use at `now_ms` should be noted: the first since the entry
    /// was loaded, then at most one per [`TOKEN_USE_EVERY_MS`].
    pub fn use_is_due(&self, now_ms: i64) -> bool {
        let last = self.last_noted_use.load(Ordering::Relaxed);
        now_ms - last >= TOKEN_USE_EVERY_MS
            && self
                .last_noted_use
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[derive(Clone)]
struct Entry<T> {
    value: T,
    stripe: u16,
    key_stripe: u16,
    generation: u64,
    key_generation: u64,
    epoch: u64,
    loaded_at: i64,
}

#[derive(Clone, Copy)]
struct UnknownEntry {
    negative_epoch: u64,
    loaded_at: i64,
}

/// One thread's recent hits of a tier, direct-mapped by hash: a new hit
/// replaces whatever held its slot.
struct Recent<T> {
    slots: Box<[RecentSlot<T>]>,
}

/// A slot of [`Recent`]: empty, or a hash and a copy of its shared entry.
type RecentSlot<T> = Option<(HashKey, Entry<T>)>;

impl<T: Clone> Recent<T> {
    fn new() -> Self {
        Self {
            slots: (0..RECENT_SLOTS).map(|_| None).collect(),
        }
    }

    fn slot(hash: &[u8; 32]) -> usize {
        usize::from(u16::from_le_bytes([hash[0], hash[1]])) % RECENT_SLOTS
    }

    fn get(&self, hash: &[u8; 32]) -> Option<&Entry<T>> {
        match &self.slots[Self::slot(hash)] {
            Some((key, entry)) if key.0 == *hash => Some(entry),
            _ => None,
        }
    }

    fn put(&mut self, hash: &[u8; 32], entry: &Entry<T>) {
        self.slots[Self::slot(hash)] = Some((HashKey(*hash), entry.clone()));
    }
}

/// What a lookup found.
pub enum Lookup<T> {
    Hit(T),
    /// Known not to exist (negative cache).
    Unknown,
    /// Not cached fresh: read the store, then [`VerifyCache::insert_key`]
    /// (or `insert_token` / `insert_unknown`) with the ticket. The entry, if
    /// it is only past its TTL, answers instead should the store be
    /// unavailable.
    Miss(Ticket, Option<T>),
}

/// The invalidation count before a store read.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// One positive cache, by SHA-256 hash.
type Tier<T> = Cache<HashKey, Entry<T>>;

/// A SHA-256 hash as a cache key. Equality is on all 32 bytes; the table
/// hash (the cache's randomly seeded foldhash) is fed only the first 16:
/// they are uniformly distributed already, and presenting many keys whose
/// hashes share 128 bits is infeasible, so no one can crowd a bucket. One
/// `write_u128` costs less than hashing the 32-byte slice with its length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct HashKey([u8; 32]);

impl Hash for HashKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 16];
        head.copy_from_slice(&self.0[..16]);
        state.write_u128(u128::from_le_bytes(head));
    }
}

/// Which tier a lookup went to, and what it found: the indexes of
/// [`VerifyCache::lookups`].
#[derive(Clone, Copy)]
enum TierName {
    Key = 0,
    Token = 1,
}

#[derive(Clone, Copy)]
enum LookupResult {
    Hit = 0,
    NegativeHit = 1,
    Miss = 2,
}

const LOOKUP_RESULTS: [(LookupResult, &str); 3] = [
    (LookupResult::Hit, "hit"),
    (LookupResult::NegativeHit, "negative_hit"),
    (LookupResult::Miss, "miss"),
];

/// Two tiers × three results.
const LOOKUP_SLOTS: usize = 2 * LOOKUP_RESULTS.len();

fn lookup_index(tier: TierName, result: LookupResult) -> usize {
    tier as usize * LOOKUP_RESULTS.len() + result as usize
}

pub struct VerifyCache {
    keys: Tier<Arc<CachedKey>>,
    /// Each thread's recent hits of `keys`.
    recent_keys: ThreadLocal<RefCell<Recent<Arc<CachedKey>>>>,
    tokens: Tier<Arc<CachedPrincipal>>,
    /// Lookups by tier and result, per thread (see [`crate::tally`]).
    lookups: Tallies<LOOKUP_SLOTS>,
    unknown: Cache<HashKey, UnknownEntry>,
    generations: Box<[AtomicU64]>,
    /// By key id (a token's entries use their token id).
    key_generations: Box<[AtomicU64]>,
    /// Bumped by every invalidation, before the generations it changes.
    invalidations: AtomicU64,
    /// Bumped by every invalidation: negative entries of older epochs are void.
    negative_epoch: AtomicU64,
    /// Bumped by [`Self::resync`]: positive entries of older epochs are void.
    epoch: AtomicU64,
    ttl_ms: i64,
    outage_grace_ms: i64,
}

impl VerifyCache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            keys: Cache::new(config.key_capacity.max(1)),
            recent_keys: ThreadLocal::new(),
            tokens: Cache::new(config.token_capacity.max(1)),
            lookups: Tallies::default(),
            unknown: Cache::new(config.unknown_capacity.max(1)),
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            key_generations: (0..KEY_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            invalidations: AtomicU64::new(0),
            negative_epoch: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            ttl_ms: config.ttl_ms,
            outage_grace_ms: config.outage_grace_ms,
        }
    }

    pub fn key(&self, hash: &[u8; 32], now_ms: i64) -> Lookup<Arc<CachedKey>> {
        let recent = self.recent_keys.get_or(|| RefCell::new(Recent::new()));
        if let Some(value) = self.fresh_recent(&recent.borrow(), hash, now_ms) {
            self.count(TierName::Key, LookupResult::Hit);
            return Lookup::Hit(value);
        }
        self.lookup_in(&self.keys, TierName::Key, hash, now_ms, |entry| {
            recent.borrow_mut().put(hash, entry);
        })
    }

    pub fn token(&self, hash: &[u8; 32], now_ms: i64) -> Lookup<Arc<CachedPrincipal>> {
        self.lookup_in(&self.tokens, TierName::Token, hash, now_ms, |_| ())
    }

    /// A thread's recent hit, if it would still be a hit in the shared tier.
    fn fresh_recent<T: Clone>(
        &self,
        recent: &Recent<T>,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> Option<T> {
        recent
            .get(hash)
            .filter(|entry| self.is_current(entry) && self.is_fresh(entry, now_ms))
            .map(|entry| entry.value.clone())
    }

    /// Caches `record` (unless the ticket is stale) and returns its entry.
    pub fn insert_key(
        &self,
        ticket: Ticket,
        hash: [u8; 32],
        record: Arc<VerificationRecord>,
        now_ms: i64,
    ) -> Arc<CachedKey> {
        let cached = Arc::new(CachedKey::new(record));
        let owner = Owner {
            account: &cached.key.account_id,
            item: &cached.key.id,
        };
        self.insert_in(&self.keys, ticket, hash, owner, cached.clone(), now_ms);
        cached
    }

    pub fn insert_token(
        &self,
        ticket: Ticket,
        hash: [u8; 32],
        principal: Arc<CachedPrincipal>,
        now_ms: i64,
    ) {
        let identity = principal.identity.clone();
        let owner = Owner {
            account: &identity.account_id,
            item: identity.token_id.as_deref().unwrap_or_default(),
        };
        self.insert_in(&self.tokens, ticket, hash, owner, principal, now_ms);
    }

    /// Looks `hash` up in `tier`; `on_hit` sees the entry of a hit.
    fn lookup_in<T: Clone>(
        &self,
        tier: &Tier<T>,
        name: TierName,
        hash: &[u8; 32],
        now_ms: i64,
        on_hit: impl FnOnce(&Entry<T>),
    ) -> Lookup<T> {
        let ticket = self.ticket();
        let entry = tier.get(&HashKey(*hash)).filter(|e| self.is_current(e));
        let stale = match entry {
            Some(entry) if self.is_fresh(&entry, now_ms) => {
                self.count(name, LookupResult::Hit);
                on_hit(&entry);
                return Lookup::Hit(entry.value);
            }
            entry => entry
                .filter(|e| now_ms - e.loaded_at < self.ttl_ms + self.outage_grace_ms)
                .map(|e| e.value),
        };
        let found = self.unknown_or_miss(hash, now_ms, ticket, stale);
        match found {
            Lookup::Unknown => self.count(name, LookupResult::NegativeHit),
            _ => self.count(name, LookupResult::Miss),
        }
        found
    }

    fn count(&self, tier: TierName, result: LookupResult) {
        self.lookups.row().add(lookup_index(tier, result), 1);
    }

    /// Appends `keyward_cache_lookups_total` to a `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        let totals = self.lookups.totals();
        tally::header(
            out,
            m::CACHE_LOOKUPS,
            "Verify-path cache lookups by cache and result.",
            "counter",
        );
        for (tier, cache) in [(TierName::Key, "key"), (TierName::Token, "token")] {
            for (result, label) in LOOKUP_RESULTS {
                let labels = format!("cache=\"{cache}\",result=\"{label}\"");
                let count = totals[lookup_index(tier, result)];
                tally::sample(out, m::CACHE_LOOKUPS, &labels, count);
            }
        }
    }

    fn insert_in<T: Clone>(
        &self,
        tier: &Tier<T>,
        ticket: Ticket,
        hash: [u8; 32],
        owner: Owner<'_>,
        value: T,
        now_ms: i64,
    ) {
        if let Some(entry) = self.entry(ticket, owner, value, now_ms) {
            tier.insert(HashKey(hash), entry);
        }
    }

    pub fn insert_unknown(&self, ticket: Ticket, hash: [u8; 32], now_ms: i64) {
        // A stale entry of a hash the store no longer knows must not answer
        // in an outage.
        self.keys.remove(&HashKey(hash));
        self.tokens.remove(&HashKey(hash));
        // Read before checking the ticket: see `entry`.
        let negative_epoch = self.negative_epoch.load(Ordering::SeqCst);
        if self.invalidations.load(Ordering::SeqCst) == ticket.0 {
            self.unknown.insert(
                HashKey(hash),
                UnknownEntry {
                    negative_epoch,
                    loaded_at: now_ms,
                },
            );
        }
    }

    /// Drops what is cached for `account` (and every negative entry).
    pub fn invalidate_account(&self, account_id: &str) {
        // The count first: a racing insert that sees the new generation has
        // then necessarily seen the new count too, and skips.
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.generations[stripe_of(account_id, STRIPES)].fetch_add(1, Ordering::SeqCst);
        self.negative_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops what is cached for the key `key_id` (and every negative
    /// entry): for a change of that key's row and nothing else.
    pub fn invalidate_key(&self, key_id: &str) {
        // The count first, as in `invalidate_account`.
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.key_generations[stripe_of(key_id, KEY_STRIPES)].fetch_add(1, Ordering::SeqCst);
        self.negative_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops every negative entry and nothing else: keys were added, which
    /// can make a hash known (an imported key's, presented before its
    /// import) but changes no key already cached.
    pub fn forget_unknown(&self) {
        // The count first, as in `invalidate_account`: a racing negative
        // insert either sees it and skips, or read the epoch this voids.
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.negative_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops everything: notifications may have been lost.
    pub fn resync(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.negative_epoch.fetch_add(1, Ordering::SeqCst);
        self.keys.clear();
        self.tokens.clear();
        self.unknown.clear();
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.invalidations.load(Ordering::SeqCst))
    }

    fn unknown_or_miss<T>(
        &self,
        hash: &[u8; 32],
        now_ms: i64,
        ticket: Ticket,
        stale: Option<T>,
    ) -> Lookup<T> {
        match self.unknown.get(&HashKey(*hash)) {
            Some(entry)
                if entry.negative_epoch == self.negative_epoch.load(Ordering::SeqCst)
                    && now_ms - entry.loaded_at < self.ttl_ms =>
            {
                Lookup::Unknown
            }
            _ => Lookup::Miss(ticket, stale),
        }
    }

    /// Within its TTL.
    fn is_fresh<T>(&self, entry: &Entry<T>, now_ms: i64) -> bool {
        now_ms - entry.loaded_at < self.ttl_ms
    }

    /// Neither invalidated (its account or its key) nor resynced away
    /// since it was loaded.
    fn is_current<T>(&self, entry: &Entry<T>) -> bool {
        entry.epoch == self.epoch.load(Ordering::SeqCst)
            && entry.generation
                == self.generations[usize::from(entry.stripe)].load(Ordering::SeqCst)
            && entry.key_generation
                == self.key_generations[usize::from(entry.key_stripe)].load(Ordering::SeqCst)
    }

    /// An entry stamped with the generations current *before* the ticket is
    /// re-checked; `None` if an invalidation ran since the ticket was taken.
    fn entry<T>(
        &self,
        ticket: Ticket,
        owner: Owner<'_>,
        value: T,
        now_ms: i64,
    ) -> Option<Entry<T>> {
        let stripe = stripe_of(owner.account, STRIPES);
        let key_stripe = stripe_of(owner.item, KEY_STRIPES);
        let generation = self.generations[stripe].load(Ordering::SeqCst);
        let key_generation = self.key_generations[key_stripe].load(Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::SeqCst);
        if self.invalidations.load(Ordering::SeqCst) != ticket.0 {
            return None;
        }
        Some(Entry {
            value,
            // STRIPES and KEY_STRIPES fit in u16.
            stripe: stripe as u16,
            key_stripe: key_stripe as u16,
            generation,
            key_generation,
            epoch,
            loaded_at: now_ms,
        })
    }
}

/// Whether a change of the key `a` also drops what is cached for the key
/// `b`: they are one key, or their ids share a stripe (about one pair of
/// keys in `KEY_STRIPES`; see the module's documentation).
pub fn key_changes_overlap(a: &str, b: &str) -> bool {
    stripe_of(a, KEY_STRIPES) == stripe_of(b, KEY_STRIPES)
}

/// Whose an entry is: its account, and its key's id (a token's id in the
/// token tier), whose stripes' generations it is stamped with.
#[derive(Clone, Copy)]
struct Owner<'a> {
    account: &'a str,
    item: &'a str,
}

/// FNV-1a of an id, onto one of `stripes` stripes.
fn stripe_of(id: &str, stripes: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % stripes as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn cache() -> (VerifyCache, Tier<u32>) {
        let config = CacheConfig {
            unknown_capacity: 100,
            ..CacheConfig::default()
        };
        (VerifyCache::new(config), Cache::new(100))
    }

    fn hash(n: u32) -> [u8; 32] {
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&n.to_le_bytes());
        hash
    }

    /// Caches `n` under `hash` as the key `key_<n>` of `account`.
    fn insert(
        cache: &VerifyCache,
        tier: &Tier<u32>,
        ticket: Ticket,
        hash: [u8; 32],
        account: &str,
        n: u32,
    ) {
        let item = format!("key_{n}");
        let owner = Owner {
            account,
            item: &item,
        };
        cache.insert_in(tier, ticket, hash, owner, n, NOW);
    }

    fn load(cache: &VerifyCache, tier: &Tier<u32>, n: u32, account: &str) {
        match cache.lookup_in(tier, TierName::Key, &hash(n), NOW, |_| ()) {
            Lookup::Miss(ticket, _) => insert(cache, tier, ticket, hash(n), account, n),
            _ => panic!("{n} was cached already"),
        }
    }

    fn hit(cache: &VerifyCache, tier: &Tier<u32>, n: u32, now: i64) -> bool {
        matches!(cache.lookup_in(tier, TierName::Key, &hash(n), now, |_| ()), Lookup::Hit(v) if v == n)
    }

    #[test]
    fn invalidating_an_account_drops_its_entries() {
        let (cache, tier) = cache();
        load(&cache, &tier, 1, "acct_a");
        assert!(hit(&cache, &tier, 1, NOW));
        cache.invalidate_account("acct_a");
        assert!(!hit(&cache, &tier, 1, NOW));
        load(&cache, &tier, 1, "acct_a");
        assert!(hit(&cache, &tier, 1, NOW), "reloaded after the change");
    }

    #[test]
    fn invalidating_a_key_drops_its_entries_only() {
        let (cache, tier) = cache();
        let mut recent = Recent::new();
        load(&cache, &tier, 1, "acct_a");
        load(&cache, &tier, 2, "acct_a");
        assert_ne!(
            stripe_of("key_1", KEY_STRIPES),
            stripe_of("key_2", KEY_STRIPES)
        );
        cache.lookup_in(&tier, TierName::Key, &hash(1), NOW, |entry| {
            recent.put(&hash(1), entry)
        });
        cache.invalidate_key("key_1");
        assert!(!hit(&cache, &tier, 1, NOW));
        assert_eq!(
            cache.fresh_recent(&recent, &hash(1), NOW),
            None,
            "nor a thread's copy"
        );
        assert!(
            hit(&cache, &tier, 2, NOW),
            "another key of the account stays"
        );
        load(&cache, &tier, 1, "acct_a");
        assert!(hit(&cache, &tier, 1, NOW), "reloaded after the change");

        // A read of key 3 that raced with its change is not cached.
        let Lookup::Miss(ticket, _) = cache.lookup_in(&tier, TierName::Key, &hash(3), NOW, |_| ())
        else {
            panic!("empty");
        };
        cache.invalidate_key("key_3");
        insert(&cache, &tier, ticket, hash(3), "acct_a", 3);
        assert!(!hit(&cache, &tier, 3, NOW));
    }

    /// The memory the module's documentation states per thread.
    #[test]
    fn a_recent_slot_takes_80_bytes() {
        assert_eq!(size_of::<RecentSlot<Arc<CachedKey>>>(), 80);
    }

    /// A thread's recent hit answers only what the shared tier would.
    #[test]
    fn a_recent_hit_goes_with_its_account_its_epoch_and_its_ttl() {
        let (cache, tier) = cache();
        let mut recent = Recent::new();
        let remember = |recent: &mut Recent<u32>, n: u32| {
            let found = cache.lookup_in(&tier, TierName::Key, &hash(n), NOW, |entry| {
                recent.put(&hash(n), entry);
            });
            assert!(matches!(found, Lookup::Hit(v) if v == n), "{n} is cached");
        };
        load(&cache, &tier, 1, "acct_a");
        load(&cache, &tier, 2, "acct_b");
        remember(&mut recent, 1);
        remember(&mut recent, 2);
        assert_eq!(cache.fresh_recent(&recent, &hash(1), NOW), Some(1));
        let ttl_ms = CacheConfig::default().ttl_ms;
        assert_eq!(cache.fresh_recent(&recent, &hash(1), NOW + ttl_ms), None);
        assert_eq!(
            cache.fresh_recent(&recent, &hash(3), NOW),
            None,
            "never seen"
        );

        cache.invalidate_account("acct_a");
        assert_eq!(cache.fresh_recent(&recent, &hash(1), NOW), None, "changed");
        assert_eq!(
            cache.fresh_recent(&recent, &hash(2), NOW),
            Some(2),
            "untouched"
        );

        cache.resync();
        assert_eq!(cache.fresh_recent(&recent, &hash(2), NOW), None, "resynced");
    }

    #[test]
    fn recent_hits_share_a_slot_by_hash() {
        let (cache, tier) = cache();
        let mut recent = Recent::new();
        // Same low bytes, so the same slot.
        let (a, mut b) = (hash(7), hash(7));
        b[31] = 1;
        for (h, account) in [(a, "acct_a"), (b, "acct_b")] {
            let Lookup::Miss(ticket, _) = cache.lookup_in(&tier, TierName::Key, &h, NOW, |_| ())
            else {
                panic!("empty cache");
            };
            insert(&cache, &tier, ticket, h, account, u32::from(h[31]));
            cache.lookup_in(&tier, TierName::Key, &h, NOW, |entry| recent.put(&h, entry));
        }
        assert_eq!(cache.fresh_recent(&recent, &b, NOW), Some(1));
        assert_eq!(cache.fresh_recent(&recent, &a, NOW), None, "replaced");
    }

    #[test]
    fn a_read_that_raced_with_a_change_is_not_cached() {
        let (cache, tier) = cache();
        let Lookup::Miss(ticket, _) = cache.lookup_in(&tier, TierName::Key, &hash(7), NOW, |_| ())
        else {
            panic!("empty cache");
        };
        // The store read happens here; a change commits and invalidates.
        cache.invalidate_account("acct_a");
        insert(&cache, &tier, ticket, hash(7), "acct_a", 7);
        assert!(!hit(&cache, &tier, 7, NOW));
        cache.insert_unknown(ticket, hash(8), NOW);
        assert!(matches!(
            cache.lookup_in(&tier, TierName::Key, &hash(8), NOW, |_| ()),
            Lookup::Miss(..)
        ));
    }

    #[test]
    fn added_keys_drop_negative_entries_only() {
        let (cache, tier) = cache();
        let miss_ticket = |n| match cache.lookup_in(&tier, TierName::Key, &hash(n), NOW, |_| ()) {
            Lookup::Miss(ticket, _) => ticket,
            _ => panic!("{n} was cached"),
        };
        let unknown = |n| {
            matches!(
                cache.lookup_in(&tier, TierName::Key, &hash(n), NOW, |_| ()),
                Lookup::Unknown
            )
        };
        load(&cache, &tier, 1, "acct_a");
        cache.insert_unknown(miss_ticket(8), hash(8), NOW);
        assert!(unknown(8));
        // A read that found no key 9 before the key was added.
        let racing = miss_ticket(9);
        cache.forget_unknown();
        assert!(
            !unknown(8),
            "the added key may be the one remembered as unknown"
        );
        cache.insert_unknown(racing, hash(9), NOW);
        assert!(
            !unknown(9),
            "nor may a read that raced with the addition remember it"
        );
        assert!(hit(&cache, &tier, 1, NOW), "no cached key changed");
    }

    #[test]
    fn entries_expire_and_resync_drops_everything() {
        let (cache, tier) = cache();
        load(&cache, &tier, 1, "acct_a");
        assert!(!hit(&cache, &tier, 1, NOW + CacheConfig::default().ttl_ms));
        assert!(hit(&cache, &tier, 1, NOW));
        cache.resync();
        assert!(!hit(&cache, &tier, 1, NOW));
    }

    #[test]
    fn past_its_ttl_an_entry_is_only_the_answer_for_an_outage() {
        let (cache, tier) = cache();
        let CacheConfig {
            ttl_ms,
            outage_grace_ms,
            ..
        } = CacheConfig::default();
        load(&cache, &tier, 1, "acct_a");
        let stale = |now| match cache.lookup_in(&tier, TierName::Key, &hash(1), now, |_| ()) {
            Lookup::Miss(_, stale) => stale,
            Lookup::Hit(_) => panic!("a hit at {now}"),
            Lookup::Unknown => panic!("unknown at {now}"),
        };
        assert_eq!(stale(NOW + ttl_ms), Some(1));
        assert_eq!(stale(NOW + ttl_ms + outage_grace_ms - 1), Some(1));
        assert_eq!(
            stale(NOW + ttl_ms + outage_grace_ms),
            None,
            "past the grace"
        );
        cache.invalidate_account("acct_a");
        assert_eq!(stale(NOW + ttl_ms), None, "a changed key never answers");
        load(&cache, &tier, 1, "acct_a");
        cache.resync();
        assert_eq!(stale(NOW + ttl_ms), None, "nor one resynced away");
    }

    #[test]
    fn a_token_use_is_due_once_a_minute_per_entry() {
        let identity = Identity {
            account_id: "acct".into(),
            member_id: "mem".into(),
            token_id: Some("tok".into()),
            permissions: Vec::new(),
        };
        let cached = CachedPrincipal::new(identity, None);
        assert!(cached.use_is_due(NOW), "the first use");
        assert!(!cached.use_is_due(NOW + 1));
        assert!(!cached.use_is_due(NOW + TOKEN_USE_EVERY_MS - 1));
        assert!(cached.use_is_due(NOW + TOKEN_USE_EVERY_MS));
        assert!(!cached.use_is_due(NOW + TOKEN_USE_EVERY_MS));
    }

    #[test]
    fn unknown_hashes_are_remembered_in_bounded_memory() {
        let (cache, tier) = cache();
        for n in 0..10_000 {
            let Lookup::Miss(ticket, _) =
                cache.lookup_in(&tier, TierName::Key, &hash(n), NOW, |_| ())
            else {
                panic!("{n} is new");
            };
            cache.insert_unknown(ticket, hash(n), NOW);
        }
        assert!(matches!(
            cache.lookup_in(&tier, TierName::Key, &hash(9_999), NOW, |_| ()),
            Lookup::Unknown
        ));
        assert!(
            cache.unknown.len() <= 200,
            "{} negative entries for a capacity of 100",
            cache.unknown.len()
        );
        // Any change may make a hash known: negatives go with it.
        cache.invalidate_account("acct_b");
        assert!(matches!(
            cache.lookup_in(&tier, TierName::Key, &hash(9_999), NOW, |_| ()),
            Lookup::Miss(..)
        ));
    }
}
