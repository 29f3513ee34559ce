//! Request logs and last use without a storage write per verification:
//! outcomes are appended to bounded in-memory lists (one per verifying
//! thread), encoded into request-log blocks every [`ENCODE_INTERVAL`], and
//! written every [`FLUSH_INTERVAL`] and at shutdown — the keys' last uses in
//! one batch, then the logs, a transaction per [`ROWS_PER_WRITE`] entries.
//! When a list is full (the store is down or slower than the traffic), new
//! log entries are dropped and counted, their uses still noted —
//! verification never waits for storage.
//!
//! Retention is enforced by the `purge_request_logs` job (`crate::jobs`).

use crate::cache::CachedKey;
use crate::telemetry as m;
use crate::usage::UsageBuffer;
use crate::verifier::RequestLine;
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use keyward_core::PermissionName;
use keyward_core::verify::Code;
use keyward_store::{LogEntry, RequestLogBatch, Store, StoreError, VerificationRecord};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thread_local::ThreadLocal;
use tokio::sync::{Mutex as AsyncMutex, watch};

/// How often buffered outcomes are written, at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How often buffered outcomes are encoded into blocks between two writes.
/// Encoding is most of a flush's CPU (~1,800 instructions an entry);
/// done for a whole second at once, at full load it took a core for tens
/// of milliseconds, and the requests answered meanwhile were the slowest
/// of each second. In tenths it takes a few milliseconds at a time.
pub const ENCODE_INTERVAL: Duration = Duration::from_millis(100);

/// Entries held at most per verifying thread between flushes (about 130
/// bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The permissions a verification asked for, as the buffer holds them.
#[derive(Debug)]
pub enum AskedPermissions {
    /// Positions (bit `i` = index `i`) in the record's sorted permission
    /// list: when the key holds every permission asked, in the order asked,
    /// the log points at the record's names instead of copying them.
    Held(u64),
    /// A copy, for everything else (no record, a permission the key lacks,
    /// an unsorted list, a key with more than 64 permissions).
    Copied(Vec<PermissionName>),
}

impl AskedPermissions {
    pub fn new(record: Option<&VerificationRecord>, asked: &[PermissionName]) -> Self {
        record
            .and_then(|record| held_positions(&record.key.permissions, asked))
            .map_or_else(|| Self::Copied(asked.to_vec()), Self::Held)
    }

    /// The names asked for, in order, borrowed from the copy or the record.
    fn names<'a>(
        &'a self,
        record: Option<&'a VerificationRecord>,
    ) -> impl Iterator<Item = &'a str> + Clone + 'a {
        let (names, mask) = match self {
            Self::Copied(names) => (&names[..], None),
            Self::Held(mask) => (
                record
                    .map(|record| &record.key.permissions[..])
                    .unwrap_or_default(),
                Some(*mask),
            ),
        };
        let asked = move |i: usize| {
            mask.is_none_or(|mask| {
                let bit = u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i));
                bit.is_some_and(|bit| mask & bit != 0)
            })
        };
        names
            .iter()
            .enumerate()
            .filter(move |(i, _)| asked(*i))
            .map(|(_, name)| name.as_str())
    }
}

/// The positions of `asked` in `held` (sorted) as a bit set, if every one is
/// there and `asked` is strictly increasing (so the positions, read in
/// order, give back exactly `asked`).
fn held_positions(held: &[PermissionName], asked: &[PermissionName]) -> Option<u64> {
    if held.len() > 64 || !asked.windows(2).all(|pair| pair[0] < pair[1]) {
        return None;
    }
    asked.iter().try_fold(0u64, |mask, name| {
        held.binary_search(name).ok().map(|i| mask | (1 << i))
    })
}

/// One outcome as the verify path leaves it: copies and a pointer to the
/// (cached) record, read as a [`LogEntry`] at flush time.
#[derive(Debug)]
pub struct PendingLog {
    pub at: i64,
    /// When the verification answered, on a [`DefaultClock`] (instants of
    /// every such clock are comparable: they share one calibration). It
    /// orders entries of different threads, which `at`'s milliseconds
    /// cannot: two requests one after the other often share one.
    pub answered: QuantaInstant,
    /// The key, when it was found in the caller's account.
    pub record: Option<Arc<CachedKey>>,
    /// Without a record: the caller's account and the environment asked
    /// for (boxed, like `request`: a verification that found its key, by
    /// far the most common, carries neither).
    pub unmatched: Option<Box<Unmatched>>,
    pub ip: Option<IpAddr>,
    pub permissions: AskedPermissions,
    pub code: Code,
    pub latency_us: i64,
    /// Gateway mode's request (boxed: the verify endpoint's entries, by far
    /// the most, carry none).
    pub request: Option<Box<LoggedRequest>>,
}

/// What is logged of a verification that found no key of the caller's.
#[derive(Debug)]
pub struct Unmatched {
    pub account_id: String,
    pub environment: Option<String>,
}

/// A verified request's method and path, as logged.
#[derive(Debug)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
}

/// Paths are logged up to this many bytes (cut at a character boundary):
/// a log row stays small whatever a client sends.
pub const MAX_LOGGED_PATH: usize = 1024;

impl LoggedRequest {
    pub fn new(line: RequestLine<'_>) -> Box<Self> {
        let mut end = line.path.len().min(MAX_LOGGED_PATH);
        while !line.path.is_char_boundary(end) {
            end -= 1;
        }
        Box::new(Self {
            method: line.method.to_owned(),
            path: line.path[..end].to_owned(),
        })
    }
}

impl PendingLog {
    /// The entry to log, borrowed from this outcome and its record: the
    /// flush encodes it into its block without copying it first.
    fn log_entry(&self) -> LogEntry<'_, impl Iterator<Item = &str> + Clone + '_> {
        let record = self.record.as_deref().map(|r| &**r);
        let key = record.map(|r| &r.key);
        let (account_id, environment) = match (key, &self.unmatched) {
            (Some(key), _) => (key.account_id.as_str(), Some(key.environment.as_str())),
            (None, Some(unmatched)) => (
                unmatched.account_id.as_str(),
                unmatched.environment.as_deref(),
            ),
            (None, None) => ("", None),
        };
        LogEntry {
            account_id,
            at: self.at,
            key_id: key.map(|k| k.id.as_str()),
            workspace_id: key.map(|k| k.workspace_id.as_str()),
            environment,
            client_ip: self.ip.map(|ip| ip.to_canonical()),
            permissions: self.permissions.names(record),
            code: self.code.as_str(),
            latency_us: self.latency_us,
            method: self.request.as_ref().map(|r| r.method.as_str()),
            path: self.request.as_ref().map(|r| r.path.as_str()),
        }
    }
}

/// Request-log entries per write transaction (one [`RequestLogBatch`]).
/// Between two, other writers get their turn — on SQLite's single writer,
/// a metered key's credit draws and every API change — instead of waiting
/// out a whole second's logs (tens of thousands of rows at full load,
/// about 100 ms of inserts when they were one row each: the metered
/// scenario's p99 at its maximum rate fell from ~145 ms to ~25 ms on the
/// development VM). Fewer rows per write cost more commits: at 2,000, that
/// scenario's rate fell by a quarter.
const ROWS_PER_WRITE: usize = 5_000;

/// Outcomes of verifications, buffered until the next flush writes them as
/// request-log rows and, for valid ones, as the keys' last use (so the
/// verify path records each outcome once, and last use costs it nothing).
pub struct RequestLogBuffer {
    /// One list per verifying thread: appending takes only that thread's
    /// own, uncontended lock (a shared list's lock was fought over by every
    /// worker on every verification). The flusher empties them all.
    lists: ThreadLocal<Mutex<Vec<PendingLog>>>,
    /// Entries encoded and not yet written, in batches of at most
    /// [`ROWS_PER_WRITE`], oldest first (those of failed writes among
    /// them). Held across each encoding and write, so that they take turns
    /// whoever calls them.
    encoded: AsyncMutex<Vec<RequestLogBatch>>,
    /// Entries buffered at most per verifying thread, and kept for retry.
    capacity: usize,
    /// Reads the cut of each flush (see [`Self::take_pending`]).
    clock: DefaultClock,
    usage: UsageBuffer,
    /// Registered once: the `counter!` macro would look the series up (and
    /// allocate its key) on every dropped entry, i.e. on the verify path
    /// whenever the buffer is full.
    dropped: metrics::Counter,
}

impl RequestLogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            lists: ThreadLocal::new(),
            encoded: AsyncMutex::new(Vec::new()),
            capacity,
            clock: DefaultClock::default(),
            usage: UsageBuffer::default(),
            dropped: metrics::counter!(m::DROPPED_ENTRIES, "buffer" => "request_logs"),
        }
    }

    /// Buffers one outcome, or, if this thread's list is full, drops its log
    /// entry (counted) but still notes the key's use, so last-used stays
    /// exact even when logs are shed.
    pub fn record(&self, entry: PendingLog) {
        let mut list = lock(self.lists.get_or_default());
        if list.len() < self.capacity {
            list.push(entry);
            return;
        }
        drop(list);
        self.dropped.increment(1);
        self.note_use(&entry);
    }

    /// Notes a use of a management token, written with the next flush.
    pub fn note_token_use(&self, account_id: &str, token_id: &str, at: i64) {
        self.usage.touch_token(account_id, token_id, at);
    }

    /// Empties the buffer without writing anything; returns how many
    /// entries it held. For benchmarks, which drain the buffer between
    /// timed runs as the flusher would, so that they measure appending
    /// rather than the full buffer's drop path.
    pub fn discard(&self) -> usize {
        self.take_pending().len()
    }

    /// A valid outcome is a use of its key (of the secret a rotation
    /// replaced, if that is the one presented).
    fn note_use(&self, entry: &PendingLog) {
        let Some(record) = entry.record.as_deref().filter(|_| entry.code.is_valid()) else {
            return;
        };
        self.usage.touch(
            &record.key.account_id,
            &record.key.id,
            record.replaced_secret_expires_at.is_some(),
            entry.at,
            entry.ip,
        );
    }

    /// Everything pending, oldest first; valid uses are noted for last-used.
    fn take_pending(&self) -> Vec<PendingLog> {
        self.take_answered_by(self.clock.now())
    }

    /// The entries of verifications that answered by `cut`, oldest first;
    /// later ones stay for the next flush.
    ///
    /// Rows' ids, which listing sorts by, are minted in this order, flush
    /// after flush, so it must be the order in which requests were
    /// answered. The lists are visited one after the other while
    /// verifications go on; without the cut, an entry appended to a list
    /// already visited would wait for the next flush while a later one,
    /// appended to a list not yet visited, went in this one, and would be
    /// listed as the older. With the cut read before any list is visited,
    /// a verification answered before the next one began (the order a
    /// client can see) is taken no later than it.
    fn take_answered_by(&self, cut: QuantaInstant) -> Vec<PendingLog> {
        let mut pending = Vec::new();
        for list in self.lists.iter() {
            let mut list = lock(list);
            // Each thread's list is in the order its entries answered.
            let due = list.partition_point(|entry| entry.answered <= cut);
            // The same room again: the next second's traffic is likely alike.
            let mut room = Vec::with_capacity(list.len());
            room.extend(list.drain(due..));
            let taken = std::mem::replace(&mut *list, room);
            drop(list);
            pending.extend(taken);
        }
        pending.sort_by_key(|entry| entry.answered);
        for entry in &pending {
            self.note_use(entry);
        }
        pending
    }

    /// Encodes what is buffered, then writes the last uses and the
    /// request logs (see [`Self::write`]).
    pub async fn flush(&self, store: &Arc<dyn Store>) {
        self.encode().await;
        self.write(store).await;
    }

    /// Encodes the entries answered so far into blocks, on the blocking
    /// pool (a tenth of a second's entries at full load take milliseconds
    /// of CPU, which on a runtime worker would stall the verifications
    /// queued behind it).
    pub async fn encode(&self) {
        let mut encoded = self.encoded.lock().await;
        let pending = self.take_pending();
        if pending.is_empty() {
            return;
        }
        let batches = std::mem::take(&mut *encoded);
        let held = entries(&batches) + pending.len();
        match tokio::task::spawn_blocking(move || encode_into(batches, pending)).await {
            Ok((batches, not_encoded)) => {
                *encoded = batches;
                self.dropped.increment(not_encoded);
            }
            // Only if encoding panicked: the entries are lost.
            Err(_) => self.dropped.increment(held as u64),
        }
    }

    /// Writes the last uses, then the encoded request logs, one
    /// transaction per batch. On failure the batches not written are kept,
    /// to go first in the next write, as far as the capacity allows; the
    /// rest are dropped and counted.
    pub async fn write(&self, store: &Arc<dyn Store>) {
        let mut encoded = self.encoded.lock().await;
        self.usage.flush(store.as_ref()).await;
        let count = entries(&encoded);
        if count == 0 {
            return;
        }
        metrics::histogram!(m::FLUSH_BATCH_SIZE, "buffer" => "request_logs").record(count as f64);
        let batches = std::mem::take(&mut *encoded);
        for (written, batch) in batches.iter().enumerate() {
            if let Err(error) = store.insert_request_logs(batch).await {
                let mut unwritten = batches;
                unwritten.drain(..written);
                *encoded = self.keep_for_retry(unwritten, &error);
                return;
            }
        }
    }

    /// The newest of `batches` that fit the capacity; the oldest are
    /// dropped whole, and counted.
    fn keep_for_retry(
        &self,
        mut batches: Vec<RequestLogBatch>,
        error: &StoreError,
    ) -> Vec<RequestLogBatch> {
        let count = entries(&batches);
        tracing::warn!(%error, entries = count, "could not write request logs; will retry");
        metrics::counter!(m::FLUSH_FAILURES, "buffer" => "request_logs").increment(1);
        let mut kept = count;
        let too_old = batches
            .iter()
            .take_while(|batch| {
                let over = kept > self.capacity;
                kept -= if over { batch.len() } else { 0 };
                over
            })
            .count();
        self.dropped.increment((count - kept) as u64);
        batches.drain(..too_old);
        batches
    }

    /// Encodes every [`ENCODE_INTERVAL`] and writes every
    /// [`FLUSH_INTERVAL`] until `shutdown` fires, then flushes once more so
    /// that nothing buffered is lost at a graceful stop.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(ENCODE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_write = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.encode().await;
                    if last_write.elapsed() >= FLUSH_INTERVAL {
                        last_write = tokio::time::Instant::now();
                        self.write(&store).await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.flush(&store).await;
    }
}

/// Entries in `batches`.
fn entries(batches: &[RequestLogBatch]) -> usize {
    batches.iter().map(RequestLogBatch::len).sum()
}

/// `pending` encoded after `batches`, a new batch begun whenever the last
/// holds [`ROWS_PER_WRITE`] entries; also returns how many entries could
/// not be encoded (none is expected to). Freeing `pending` happens here
/// too, off the runtime.
fn encode_into(
    mut batches: Vec<RequestLogBatch>,
    pending: Vec<PendingLog>,
) -> (Vec<RequestLogBatch>, u64) {
    let mut not_encoded = 0;
    for entry in &pending {
        if batches
            .last()
            .is_none_or(|last| last.len() >= ROWS_PER_WRITE)
        {
            batches.push(RequestLogBatch::default());
        }
        if let Some(batch) = batches.last_mut() {
            not_encoded += u64::from(batch.push(entry.log_entry()).is_err());
        }
    }
    (batches, not_encoded)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::nanos::Nanos;

    fn entry(code: Code) -> PendingLog {
        PendingLog {
            at: 1,
            answered: DefaultClock::default().now(),
            record: None,
            unmatched: Some(Box::new(Unmatched {
                account_id: "acct".into(),
                environment: Some("production".into()),
            })),
            ip: "::ffff:203.0.113.7".parse().ok(),
            permissions: AskedPermissions::Copied(vec![
                PermissionName::parse("customers:read").unwrap(),
            ]),
            code,
            latency_us: 1,
            request: None,
        }
    }

    /// Every verification moves one entry into its buffer: at 128 bytes or
    /// less the compiler copies it inline, above it calls `memcpy` (twice
    /// per append, most of the 9 % of verify time `perf` found there).
    #[test]
    fn an_entry_is_small_enough_to_copy_inline() {
        assert!(std::mem::size_of::<PendingLog>() <= 128);
    }

    #[test]
    fn logged_paths_are_cut_at_a_character_boundary() {
        let long = format!("/{}", "é".repeat(MAX_LOGGED_PATH));
        let logged = LoggedRequest::new(RequestLine {
            method: "GET",
            path: &long,
        });
        assert!(logged.path.len() <= MAX_LOGGED_PATH);
        assert!(logged.path.len() >= MAX_LOGGED_PATH - 1);
        assert!(long.starts_with(&logged.path));
        let pending = PendingLog {
            request: Some(logged),
            ..entry(Code::Valid)
        };
        let entry = pending.log_entry();
        assert_eq!(entry.method, Some("GET"));
        assert!(entry.path.is_some_and(|p| p.starts_with("/é")));
    }

    /// A buffer holding entries answered at `start` + 3 and 5 ns on this
    /// thread and + 1 and 4 ns on another, all in the same millisecond;
    /// each entry's latency is its offset, to tell them apart.
    fn interleaved(start: QuantaInstant) -> Arc<RequestLogBuffer> {
        let buffer = Arc::new(RequestLogBuffer::new(10));
        let answered = move |offset: u64| PendingLog {
            answered: start + Nanos::new(offset),
            latency_us: offset as i64,
            ..entry(Code::Valid)
        };
        buffer.record(answered(3));
        buffer.record(answered(5));
        let other = buffer.clone();
        std::thread::spawn(move || [1, 4].into_iter().for_each(|t| other.record(answered(t))))
            .join()
            .unwrap();
        buffer
    }

    fn offsets(taken: Vec<PendingLog>) -> Vec<i64> {
        taken.iter().map(|entry| entry.latency_us).collect()
    }

    #[test]
    fn entries_of_every_thread_come_out_in_the_order_they_answered() {
        let start = DefaultClock::default().now();
        let buffer = interleaved(start);
        assert_eq!(offsets(buffer.take_pending()), [1, 3, 4, 5]);
    }

    #[test]
    fn entries_answered_after_the_cut_wait_for_the_next_flush() {
        let start = DefaultClock::default().now();
        let buffer = interleaved(start);
        let cut = start + Nanos::new(3);
        assert_eq!(offsets(buffer.take_answered_by(cut)), [1, 3]);
        let later = start + Nanos::new(10);
        assert_eq!(offsets(buffer.take_answered_by(later)), [4, 5]);
        assert!(buffer.take_answered_by(later).is_empty());
    }

    #[test]
    fn held_permissions_are_kept_as_positions_only_when_that_is_exact() {
        let names = |list: &[&str]| -> Vec<PermissionName> {
            list.iter()
                .map(|n| PermissionName::parse(n).unwrap())
                .collect()
        };
        let held = names(&["a:read", "b:read", "c:read"]);
        assert_eq!(
            held_positions(&held, &names(&["a:read", "c:read"])),
            Some(0b101)
        );
        assert_eq!(held_positions(&held, &[]), Some(0));
        assert_eq!(held_positions(&held, &names(&["c:read", "a:read"])), None);
        assert_eq!(held_positions(&held, &names(&["a:read", "a:read"])), None);
        assert_eq!(held_positions(&held, &names(&["a:read", "d:read"])), None);
    }

    /// Entries encoded over several turns are written in batches of
    /// `ROWS_PER_WRITE`, each its own transaction, and land whole.
    #[tokio::test]
    async fn a_flush_larger_than_one_write_writes_every_row() {
        let store = keyward_store::open("sqlite::memory:").await.unwrap();
        let rows = 2 * ROWS_PER_WRITE + 1;
        let buffer = RequestLogBuffer::new(rows);
        // Encoded in two turns, as the ticks between two writes would.
        for _ in 0..ROWS_PER_WRITE + 1 {
            buffer.record(entry(Code::Valid));
        }
        buffer.encode().await;
        for _ in 0..ROWS_PER_WRITE {
            buffer.record(entry(Code::Valid));
        }
        buffer.encode().await;
        let sizes: Vec<_> = buffer
            .encoded
            .lock()
            .await
            .iter()
            .map(RequestLogBatch::len)
            .collect();
        assert_eq!(sizes, [ROWS_PER_WRITE, ROWS_PER_WRITE, 1]);
        buffer.write(&store).await;
        let mut page = keyward_store::PageRequest {
            limit: 100,
            after: None,
        };
        let mut written = 0;
        loop {
            let listed = store
                .list_request_logs("acct", &Default::default(), &page)
                .await
                .unwrap();
            written += listed.items.len();
            match listed.next_after {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        assert_eq!(written, rows);
        assert!(
            buffer.encoded.lock().await.is_empty(),
            "nothing left to retry"
        );
        assert!(buffer.take_pending().is_empty(), "nothing left to write");
    }

    /// A flush the store refuses keeps its entries, and the next flush
    /// writes them, before the entries buffered since.
    #[tokio::test]
    async fn entries_of_a_failed_flush_are_written_by_the_next() {
        use sqlx::{Connection, SqliteConnection};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("logs.db").display());
        let store = keyward_store::open(&url).await.unwrap();
        let rename = |from: &'static str, to: &'static str| {
            let url = url.clone();
            async move {
                let mut conn = SqliteConnection::connect(&url).await.unwrap();
                let sql = format!("ALTER TABLE {from} RENAME TO {to}");
                sqlx::query(&sql).execute(&mut conn).await.unwrap();
            }
        };
        let buffer = RequestLogBuffer::new(100);
        rename("request_log_blocks", "parked").await;
        for _ in 0..3 {
            buffer.record(entry(Code::Valid));
        }
        buffer.flush(&store).await;
        let kept = entries(&buffer.encoded.lock().await);
        assert_eq!(kept, 3, "kept for the next flush");
        rename("parked", "request_log_blocks").await;
        buffer.record(entry(Code::UnknownKey));
        buffer.flush(&store).await;
        assert!(buffer.encoded.lock().await.is_empty());
        let page = keyward_store::PageRequest {
            limit: 10,
            after: None,
        };
        let listed = store
            .list_request_logs("acct", &Default::default(), &page)
            .await
            .unwrap();
        let codes: Vec<_> = listed.items.iter().map(|l| l.entry.code.as_str()).collect();
        assert_eq!(codes, ["unknown_key", "valid", "valid", "valid"]);
    }

    /// Kept for retry: the newest batches, as many entries as the capacity,
    /// the oldest dropped whole and counted.
    #[test]
    fn a_failed_flush_keeps_the_newest_batches_within_capacity() {
        let buffer = RequestLogBuffer::new(5);
        let batch = |codes: &[Code]| {
            let taken: Vec<_> = codes.iter().map(|&code| entry(code)).collect();
            let mut batch = RequestLogBatch::default();
            for pending in &taken {
                batch.push(pending.log_entry()).unwrap();
            }
            batch
        };
        let batches = vec![
            batch(&[Code::Valid; 3]),
            batch(&[Code::UnknownKey; 3]),
            batch(&[Code::RateLimited; 2]),
        ];
        let error = StoreError::Invalid {
            field: "request_logs",
            message: "refused".into(),
        };
        let kept = buffer.keep_for_retry(batches, &error);
        let kept: Vec<_> = kept.iter().map(RequestLogBatch::len).collect();
        assert_eq!(kept, [3, 2]);
    }

    #[test]
    fn a_full_buffer_drops_instead_of_growing() {
        let buffer = RequestLogBuffer::new(2);
        for code in [Code::Valid, Code::UnknownKey, Code::MalformedKey] {
            buffer.record(entry(code));
        }
        let taken = buffer.take_pending();
        let entries: Vec<_> = taken.iter().map(PendingLog::log_entry).collect();
        let codes: Vec<_> = entries.iter().map(|e| e.code).collect();
        assert_eq!(codes, ["valid", "unknown_key"]);
        assert_eq!(entries[0].client_ip, "203.0.113.7".parse().ok());
        let permissions: Vec<_> = entries[0].permissions.clone().collect();
        assert_eq!(permissions, ["customers:read"]);
        assert_eq!(entries[0].account_id, "acct");
        assert!(buffer.take_pending().is_empty());
    }

    /// Permissions the key does not hold are logged from the copy, in the
    /// order asked (a held subset is checked through the API, in
    /// tests/request_logs.rs).
    #[test]
    fn copied_permissions_are_logged_as_asked() {
        let asked = ["z:write", "a:read"].map(|n| PermissionName::parse(n).unwrap());
        let copied = AskedPermissions::Copied(asked.to_vec());
        let logged: Vec<_> = copied.names(None).collect();
        assert_eq!(logged, ["z:write", "a:read"]);
    }
}
