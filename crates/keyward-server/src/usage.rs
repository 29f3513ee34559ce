//! Last-used tracking without a storage write per verification: uses are
//! folded into an in-memory map (one entry per key, so its size is bounded by
//! the number of keys) and written in one batch at every flush.

use keyward_store::{KeyUsage, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often pending uses are written, at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct UsageBuffer {
    pending: Mutex<HashMap<String, KeyUsage>>,
}

impl UsageBuffer {
    pub fn record(&self, account_id: &str, key_id: &str, at: i64, ip: Option<String>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(key_id) {
            Some(usage) if usage.at >= at => {}
            Some(usage) => {
                usage.at = at;
                usage.ip = ip;
            }
            None => {
                pending.insert(
                    key_id.to_owned(),
                    KeyUsage {
                        account_id: account_id.to_owned(),
                        key_id: key_id.to_owned(),
                        at,
                        ip,
                    },
                );
            }
        }
    }

    fn take(&self) -> Vec<KeyUsage> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.drain().map(|(_, usage)| usage).collect()
    }

    /// Writes what is pending. On failure the uses are put back (unless a
    /// newer use of the same key arrived meanwhile) for the next flush.
    pub async fn flush(&self, store: &dyn Store) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        if let Err(error) = store.record_key_usage(&batch).await {
            tracing::warn!(%error, keys = batch.len(), "could not record key usage; will retry");
            for usage in batch {
                self.record(&usage.account_id, &usage.key_id, usage.at, usage.ip);
            }
        }
    }

    /// Flushes every [`FLUSH_INTERVAL`] until `shutdown` fires, then once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.flush(store.as_ref()).await,
                _ = shutdown.changed() => break,
            }
        }
        self.flush(store.as_ref()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_latest_use_per_key() {
        let buffer = UsageBuffer::default();
        buffer.record("acct", "k1", 10, Some("10.0.0.1".into()));
        buffer.record("acct", "k1", 30, Some("10.0.0.3".into()));
        buffer.record("acct", "k1", 20, Some("10.0.0.2".into()));
        buffer.record("acct", "k2", 5, None);
        let mut batch = buffer.take();
        batch.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(batch.len(), 2);
        assert_eq!(
            (batch[0].at, batch[0].ip.as_deref()),
            (30, Some("10.0.0.3"))
        );
        assert!(buffer.take().is_empty());
    }
}
