//! Request logs and last use without a storage write per verification:
//! outcomes are appended to bounded in-memory lists (one per verifying
//! thread) and written every [`FLUSH_INTERVAL`] and at shutdown — the keys'
//! last uses in one batch, then the logs in one transaction. When a list is
//! full (the store is down or slower than the traffic), new log entries are
//! dropped and counted, their uses still noted — verification never waits
//! for storage.
//!
//! Retention is enforced by the `purge_request_logs` job (`crate::jobs`).

use crate::cache::CachedKey;
use crate::telemetry as m;
use crate::usage::UsageBuffer;
use crate::verifier::RequestLine;
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use keyward_core::PermissionName;
use keyward_core::verify::Code;
use keyward_store::{NewRequestLog, Store, StoreError, VerificationRecord};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thread_local::ThreadLocal;
use tokio::sync::watch;

/// How often buffered outcomes are written, at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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

    fn names(&self, record: Option<&VerificationRecord>) -> Vec<String> {
        match self {
            Self::Copied(names) => names.iter().map(ToString::to_string).collect(),
            Self::Held(mask) => record
                .map(|record| &record.key.permissions[..])
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, name)| name.to_string())
                .collect(),
        }
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
/// (cached) record, turned into a [`NewRequestLog`] at flush time.
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
    fn into_entry(self) -> NewRequestLog {
        let record = self.record.as_deref().map(|r| &**r);
        let key = record.map(|r| &r.key);
        let (account_id, environment) = match (key, self.unmatched) {
            (Some(key), _) => (key.account_id.clone(), Some(key.environment.clone())),
            (None, Some(unmatched)) => (unmatched.account_id, unmatched.environment),
            (None, None) => (String::new(), None),
        };
        NewRequestLog {
            account_id,
            at: self.at,
            key_id: key.map(|k| k.id.clone()),
            workspace_id: key.map(|k| k.workspace_id.clone()),
            environment,
            client_ip: self.ip.map(|ip| ip.to_canonical().to_string()),
            permissions: self.permissions.names(record),
            code: self.code.as_str().to_owned(),
            latency_us: self.latency_us,
            method: self.request.as_ref().map(|r| r.method.clone()),
            path: self.request.map(|r| r.path),
        }
    }
}

/// Request-log rows per write transaction. Between two, other writers get
/// their turn — on SQLite's single writer, a metered key's credit draws and
/// every API change — instead of waiting out a whole second's logs (tens of
/// thousands of rows at full load, about 100 ms of inserts: the metered
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
    /// Rows of failed flushes, retried first.
    retry: Mutex<Vec<NewRequestLog>>,
    /// Entries buffered at most per verifying thread, and rows kept for retry.
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
            retry: Mutex::new(Vec::new()),
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

    /// Writes the last uses, then the request logs. On failure the rows not
    /// written go back in front of newer entries, as far as the capacity
    /// allows; the rest are dropped and counted.
    pub async fn flush(&self, store: &Arc<dyn Store>) {
        let retry = std::mem::take(&mut *lock(&self.retry));
        let pending = self.take_pending();
        self.usage.flush(store.as_ref()).await;
        let count = retry.len() + pending.len();
        if count == 0 {
            return;
        }
        metrics::histogram!(m::FLUSH_BATCH_SIZE, "buffer" => "request_logs").record(count as f64);
        let write = write_off_runtime(store.clone(), retry, pending);
        match tokio::task::spawn_blocking(write).await {
            Ok(None) => {}
            Ok(Some((unwritten, error))) => self.retry_later(unwritten, &error),
            // Only if building or writing panicked: the entries are lost.
            Err(_) => self.dropped.increment(count as u64),
        }
    }

    fn retry_later(&self, rows: Vec<NewRequestLog>, error: &StoreError) {
        tracing::warn!(%error, entries = rows.len(), "could not write request logs; will retry");
        metrics::counter!(m::FLUSH_FAILURES, "buffer" => "request_logs").increment(1);
        // The oldest entries are the ones dropped.
        let skip = rows.len().saturating_sub(self.capacity);
        self.dropped.increment(skip as u64);
        *lock(&self.retry) = rows.into_iter().skip(skip).collect();
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `shutdown` fires, then once
    /// more so that nothing buffered is lost at a graceful stop.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.flush(&store).await,
                _ = shutdown.changed() => break,
            }
        }
        self.flush(&store).await;
    }
}

/// Writes the rows to retry, then the pending entries as rows,
/// [`ROWS_PER_WRITE`] to a transaction, as a closure for the blocking pool:
/// under load a second's entries (tens of thousands) take milliseconds of
/// CPU to turn into rows and then into the store's (grouped, as JSON), and
/// to free, which on a runtime worker would stall every verification queued
/// behind it. Returns the rows not written and the error that stopped them.
fn write_off_runtime(
    store: Arc<dyn Store>,
    retry: Vec<NewRequestLog>,
    pending: Vec<PendingLog>,
) -> impl FnOnce() -> Option<(Vec<NewRequestLog>, StoreError)> {
    let runtime = tokio::runtime::Handle::current();
    move || {
        let mut batch = retry;
        batch.extend(pending.into_iter().map(PendingLog::into_entry));
        runtime.block_on(async {
            let mut written = 0;
            while written < batch.len() {
                let end = batch.len().min(written + ROWS_PER_WRITE);
                if let Err(error) = store.insert_request_logs(&batch[written..end]).await {
                    return Some((batch.split_off(written), error));
                }
                written = end;
            }
            None
        })
    }
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
        let entry = PendingLog {
            request: Some(logged),
            ..entry(Code::Valid)
        }
        .into_entry();
        assert_eq!(entry.method.as_deref(), Some("GET"));
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

    /// A flush of more rows than one write takes lands whole, in several
    /// transactions.
    #[tokio::test]
    async fn a_flush_larger_than_one_write_writes_every_row() {
        let store = keyward_store::open("sqlite::memory:").await.unwrap();
        let rows = 2 * ROWS_PER_WRITE + 1;
        let buffer = RequestLogBuffer::new(rows);
        for _ in 0..rows {
            buffer.record(entry(Code::Valid));
        }
        buffer.flush(&store).await;
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
        assert!(lock(&buffer.retry).is_empty(), "nothing left to retry");
        assert!(buffer.take_pending().is_empty(), "nothing left to write");
    }

    fn take(buffer: &RequestLogBuffer) -> Vec<NewRequestLog> {
        buffer
            .take_pending()
            .into_iter()
            .map(PendingLog::into_entry)
            .collect()
    }

    #[test]
    fn a_full_buffer_drops_instead_of_growing() {
        let buffer = RequestLogBuffer::new(2);
        for code in [Code::Valid, Code::UnknownKey, Code::MalformedKey] {
            buffer.record(entry(code));
        }
        let batch = take(&buffer);
        assert_eq!(
            batch.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
            ["valid", "unknown_key"]
        );
        assert_eq!(batch[0].client_ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(batch[0].permissions, ["customers:read"]);
        assert_eq!(batch[0].account_id, "acct");
        assert!(take(&buffer).is_empty());
    }
}
