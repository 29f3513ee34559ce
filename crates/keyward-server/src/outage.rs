//! Riding out a store outage on the verify path (SPEC §6: "if the store is
//! briefly unavailable, verification of already-cached keys keeps working
//! for a bounded, configurable time").
//!
//! A cache entry past its TTL is normally re-read from the store. When that
//! read fails because the store is unavailable, the entry still answers if
//! it was neither invalidated nor older than TTL + the outage grace
//! ([`crate::cache::CacheConfig::outage_grace_ms`]): during an outage no
//! change can be committed through this node, and other nodes' changes
//! cannot reach it either, so the entry is the best knowledge there is. The
//! grace bounds how long a key revoked elsewhere during a network partition
//! may still pass here.
//!
//! A read gets [`READ_BUDGET`]: a partitioned network drops packets rather
//! than refusing them, and a verification must not wait for TCP to give
//! up. The first failed or late read starts an [`Outage`]. While it lasts,
//! stale entries answer at once instead of each waiting for the store to
//! fail again, and a probe pings the store every [`PROBE_EVERY`] until it
//! answers. Any read that succeeds ends the outage too.

use crate::telemetry as m;
use keyward_store::{Store, StoreError, StoreResult};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How often the probe pings a store that has failed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long a verification waits for the store: far longer than a
/// one-row indexed read takes, far shorter than TCP takes to give up.
pub const READ_BUDGET: Duration = Duration::from_secs(2);

/// Whether the store is known to be failing. One flag for the process: the
/// key and token caches read through the same store.
#[derive(Default)]
pub struct Outage {
    ongoing: AtomicBool,
}

/// What a read through [`Outage::read`] gave.
pub enum Read<R, T> {
    /// The store answered.
    Fresh(R),
    /// The store is unavailable: the cache entry past its TTL answers.
    Stale(T),
}

impl Outage {
    pub fn is_ongoing(&self) -> bool {
        self.ongoing.load(Ordering::Relaxed)
    }

    /// Reads the store with `read`, unless an outage is ongoing and a stale
    /// entry can answer; if the read fails because the store is
    /// unavailable, the stale entry answers, and without one the error does.
    pub async fn read<R, T>(
        &self,
        stale: Option<T>,
        read: impl Future<Output = StoreResult<R>>,
    ) -> StoreResult<Read<R, T>> {
        let stale = match stale {
            Some(entry) if self.is_ongoing() => return Ok(answer_stale(entry)),
            stale => stale,
        };
        let read = tokio::time::timeout(READ_BUDGET, read).await;
        match read.unwrap_or_else(|_| Err(StoreError::timed_out())) {
            Ok(found) => {
                self.end();
                Ok(Read::Fresh(found))
            }
            Err(StoreError::Unavailable(error)) => {
                self.begin(&error);
                match stale {
                    Some(entry) => Ok(answer_stale(entry)),
                    None => Err(StoreError::Unavailable(error)),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Until `shutdown`: while an outage is ongoing, pings the store every
    /// [`PROBE_EVERY`] (each ping within [`READ_BUDGET`]) and ends the
    /// outage once it answers.
    pub async fn run_probe(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(PROBE_EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            if self.is_ongoing()
                && let Ok(Ok(())) = tokio::time::timeout(READ_BUDGET, store.ping()).await
            {
                self.end();
            }
        }
    }

    fn begin(&self, error: &dyn std::error::Error) {
        if !self.ongoing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %error,
                "store unavailable: cached keys keep answering within the outage grace"
            );
            metrics::gauge!(m::STORE_OUTAGE).set(1.0);
        }
    }

    fn end(&self) {
        // A load first: the common case (no outage) writes nothing.
        if self.is_ongoing() && self.ongoing.swap(false, Ordering::Relaxed) {
            tracing::info!("store answering again");
            metrics::gauge!(m::STORE_OUTAGE).set(0.0);
        }
    }
}

fn answer_stale<R, T>(entry: T) -> Read<R, T> {
    metrics::counter!(m::STALE_ANSWERS).increment(1);
    Read::Stale(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreResult<u32> {
        Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
    }

    fn run<F: Future>(future: F) -> F::Output {
        // Paused time: a read that never answers runs out its budget at
        // once instead of in real seconds.
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_failed_read_answers_with_the_stale_entry_and_starts_an_outage() {
        let outage = Outage::default();
        let read = run(outage.read(Some("stale"), async { unavailable() }));
        assert!(matches!(read, Ok(Read::Stale("stale"))));
        assert!(outage.is_ongoing());

        // While it lasts, the store is not asked for a stale entry.
        let read = run(outage.read(Some("stale"), async { panic!("read during an outage") }));
        assert!(matches!(read, Ok(Read::<u32, _>::Stale("stale"))));

        // Without a stale entry the store is asked, and its answer ends it.
        let read = run(outage.read(None::<&str>, async { Ok(7) }));
        assert!(matches!(read, Ok(Read::Fresh(7))));
        assert!(!outage.is_ongoing());
    }

    #[test]
    fn a_read_past_its_budget_counts_as_unavailable() {
        let outage = Outage::default();
        let read = run(outage.read(Some("stale"), std::future::pending::<StoreResult<u32>>()));
        assert!(matches!(read, Ok(Read::Stale("stale"))));
        assert!(outage.is_ongoing());
    }

    #[test]
    fn without_a_stale_entry_the_failure_is_the_answer() {
        let outage = Outage::default();
        let read = run(outage.read(None::<&str>, async { unavailable() }));
        assert!(matches!(read, Err(StoreError::Unavailable(_))));
        assert!(outage.is_ongoing());
    }

    #[test]
    fn other_errors_neither_answer_stale_nor_start_an_outage() {
        let outage = Outage::default();
        let read = run(outage.read(Some("stale"), async {
            Err::<u32, _>(StoreError::corrupt("bad row"))
        }));
        assert!(matches!(read, Err(StoreError::Corrupt(_))));
        assert!(!outage.is_ongoing());
    }
}
