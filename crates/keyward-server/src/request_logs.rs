//! Request logs without a storage write per verification: outcomes are
//! appended to a bounded in-memory buffer and written in one transaction
//! (multi-row INSERTs) every `FLUSH_INTERVAL` and at shutdown. When the
//! buffer is full (the store is down or slower than the traffic), new
//! entries are dropped and counted — verification never waits for storage.
//!
//! Retention is enforced by the `purge_request_logs` job (`crate::jobs`).

use crate::cache::CachedKey;
use crate::telemetry as m;
use crate::usage::flush_periodically;
use keyward_core::PermissionName;
use keyward_core::verify::Code;
use keyward_store::{NewRequestLog, Store, VerificationRecord};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Entries held at most between flushes (about 200 bytes each).
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
    /// The key, when it was found in the caller's account.
    pub record: Option<Arc<CachedKey>>,
    /// Without a record: the caller's account and the environment asked for.
    pub account_id: Option<String>,
    pub environment: Option<String>,
    pub ip: Option<IpAddr>,
    pub permissions: AskedPermissions,
    pub code: Code,
    pub latency_us: i64,
}

impl PendingLog {
    fn into_entry(self) -> NewRequestLog {
        let record = self.record.as_deref().map(|r| &**r);
        let key = record.map(|r| &r.key);
        NewRequestLog {
            account_id: key
                .map(|k| k.account_id.clone())
                .or(self.account_id)
                .unwrap_or_default(),
            at: self.at,
            key_id: key.map(|k| k.id.clone()),
            workspace_id: key.map(|k| k.workspace_id.clone()),
            environment: key.map(|k| k.environment.clone()).or(self.environment),
            client_ip: self.ip.map(|ip| ip.to_canonical().to_string()),
            permissions: self.permissions.names(record),
            code: self.code.as_str().to_owned(),
            latency_us: self.latency_us,
        }
    }
}

#[derive(Default)]
struct Pending {
    fresh: Vec<PendingLog>,
    /// Entries of failed flushes, retried first.
    retry: Vec<NewRequestLog>,
}

impl Pending {
    fn len(&self) -> usize {
        self.fresh.len() + self.retry.len()
    }

    /// Everything pending, oldest first, as rows.
    fn into_rows(self) -> Vec<NewRequestLog> {
        let mut batch = self.retry;
        batch.extend(self.fresh.into_iter().map(PendingLog::into_entry));
        batch
    }
}

/// From this many entries on, a flush builds its rows and frees them on the
/// blocking pool: under load a second's entries (tens of thousands) take
/// milliseconds to turn into rows and to free, which on a runtime worker
/// would stall every verification queued behind it.
const OFFLOAD_AT: usize = 1024;

pub struct RequestLogBuffer {
    pending: Mutex<Pending>,
    capacity: usize,
    /// Registered once: the `counter!` macro would look the series up (and
    /// allocate its key) on every dropped entry, i.e. on the verify path
    /// whenever the buffer is full.
    dropped: metrics::Counter,
}

impl RequestLogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            capacity,
            dropped: metrics::counter!(m::DROPPED_ENTRIES, "buffer" => "request_logs"),
        }
    }

    /// Buffers one entry, or drops it (counted) if the buffer is full.
    pub fn record(&self, entry: PendingLog) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= self.capacity {
            drop(pending);
            self.dropped.increment(1);
        } else {
            pending.fresh.push(entry);
        }
    }

    fn take_pending(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Everything pending, oldest first, as rows.
    #[cfg(test)]
    fn take(&self) -> Vec<NewRequestLog> {
        self.take_pending().into_rows()
    }

    /// [`Self::take`], off the runtime's workers for a large batch.
    async fn take_rows(&self) -> Vec<NewRequestLog> {
        let pending = self.take_pending();
        if pending.fresh.len() < OFFLOAD_AT {
            return pending.into_rows();
        }
        let count = pending.len();
        match tokio::task::spawn_blocking(move || pending.into_rows()).await {
            Ok(rows) => rows,
            // Only if building the rows panicked: the entries are lost.
            Err(_) => {
                self.dropped.increment(count as u64);
                Vec::new()
            }
        }
    }

    /// Writes what is pending. On failure the batch goes back in front of
    /// newer entries, as far as the capacity allows; the rest is dropped and
    /// counted.
    pub async fn flush(&self, store: &dyn Store) {
        let batch = self.take_rows().await;
        if batch.is_empty() {
            return;
        }
        metrics::histogram!(m::FLUSH_BATCH_SIZE, "buffer" => "request_logs")
            .record(batch.len() as f64);
        let Err(error) = store.insert_request_logs(&batch).await else {
            if batch.len() >= OFFLOAD_AT {
                tokio::task::spawn_blocking(move || drop(batch));
            }
            return;
        };
        tracing::warn!(%error, entries = batch.len(), "could not write request logs; will retry");
        metrics::counter!(m::FLUSH_FAILURES, "buffer" => "request_logs").increment(1);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.capacity.saturating_sub(pending.len());
        if batch.len() > room {
            let dropped = batch.len() - room;
            self.dropped.increment(dropped as u64);
        }
        // The oldest entries are the ones dropped.
        let skip = batch.len().saturating_sub(room);
        pending.retry = batch.into_iter().skip(skip).collect();
    }

    /// Flushes every `FLUSH_INTERVAL` until `shutdown` fires, then once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, shutdown: watch::Receiver<bool>) {
        flush_periodically(shutdown, || self.flush(store.as_ref())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: Code) -> PendingLog {
        PendingLog {
            at: 1,
            record: None,
            account_id: Some("acct".into()),
            environment: Some("production".into()),
            ip: "::ffff:203.0.113.7".parse().ok(),
            permissions: AskedPermissions::Copied(vec![
                PermissionName::parse("customers:read").unwrap(),
            ]),
            code,
            latency_us: 1,
        }
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

    #[test]
    fn a_full_buffer_drops_instead_of_growing() {
        let buffer = RequestLogBuffer::new(2);
        for code in [Code::Valid, Code::UnknownKey, Code::MalformedKey] {
            buffer.record(entry(code));
        }
        let batch = buffer.take();
        assert_eq!(
            batch.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
            ["valid", "unknown_key"]
        );
        assert_eq!(batch[0].client_ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(batch[0].permissions, ["customers:read"]);
        assert_eq!(batch[0].account_id, "acct");
        assert!(buffer.take().is_empty());
    }
}
