//! Last-used tracking without a storage write per verification: the
//! request-log flusher folds each batch's valid outcomes into an in-memory
//! map (one entry per key, so its size is bounded by the number of keys) and
//! writes it in one batch before the logs (see [`crate::request_logs`]).
//! Management tokens' uses are noted here too, by the authentication of the
//! requests that carry them, and written in the same flush.

use keyward_store::{KeyUsage, Store, TokenUsage};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The latest use of one secret of one key, or of a token (no address).
/// The address stays an `IpAddr` until the flush: the verify path formats
/// nothing.
struct LatestUse {
    account_id: String,
    at: i64,
    ip: Option<IpAddr>,
}

/// By key (or token) id. Ids are minted by the server, so foldhash
/// (randomly seeded) instead of SipHash.
type ById = HashMap<String, LatestUse, foldhash::fast::RandomState>;

#[derive(Default)]
struct Pending {
    /// By key id: uses of the key's current secret…
    current: ById,
    /// …and of the secret a rotation replaced, tracked on its own.
    replaced: ById,
    /// By management token id.
    tokens: ById,
}

#[derive(Default)]
pub struct UsageBuffer {
    pending: Mutex<Pending>,
}

impl UsageBuffer {
    /// Notes a use. Allocates only for a key's first use since the last
    /// flush; later ones update the entry in place.
    pub fn touch(
        &self,
        account_id: &str,
        key_id: &str,
        replaced_secret: bool,
        at: i64,
        ip: Option<IpAddr>,
    ) {
        let mut pending = self.lock();
        let uses = if replaced_secret {
            &mut pending.replaced
        } else {
            &mut pending.current
        };
        note(uses, account_id, key_id, at, ip);
    }

    /// Notes a use of a management token.
    pub fn touch_token(&self, account_id: &str, token_id: &str, at: i64) {
        note(&mut self.lock().tokens, account_id, token_id, at, None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Self::touch`] for a use already in row form (a failed batch).
    pub fn record(&self, usage: KeyUsage) {
        let ip = usage.ip.as_deref().and_then(|ip| ip.parse().ok());
        self.touch(
            &usage.account_id,
            &usage.key_id,
            usage.replaced_secret,
            usage.at,
            ip,
        );
    }

    fn take(&self) -> (Vec<KeyUsage>, Vec<TokenUsage>) {
        let taken = std::mem::take(&mut *self.lock());
        let tokens = taken
            .tokens
            .into_iter()
            .map(|(token_id, latest)| TokenUsage {
                account_id: latest.account_id,
                token_id,
                at: latest.at,
            })
            .collect();
        let rows = |uses: ById, replaced_secret: bool| {
            uses.into_iter().map(move |(key_id, latest)| KeyUsage {
                account_id: latest.account_id,
                key_id,
                replaced_secret,
                at: latest.at,
                ip: latest.ip.map(|ip| ip.to_canonical().to_string()),
            })
        };
        let keys = rows(taken.current, false)
            .chain(rows(taken.replaced, true))
            .collect();
        (keys, tokens)
    }

    /// Writes what is pending. On failure the uses are put back (unless a
    /// newer use of the same key or token arrived meanwhile) for the next
    /// flush.
    pub(crate) async fn flush(&self, store: &dyn Store) {
        let (keys, tokens) = self.take();
        if !keys.is_empty() {
            metrics::histogram!(crate::telemetry::FLUSH_BATCH_SIZE, "buffer" => "usage")
                .record(keys.len() as f64);
        }
        if let Err(error) = store.record_key_usage(&keys).await {
            failed(&error, "key", keys.len());
            for usage in keys {
                self.record(usage);
            }
        }
        if let Err(error) = store.record_token_usage(&tokens).await {
            failed(&error, "token", tokens.len());
            for usage in tokens {
                self.touch_token(&usage.account_id, &usage.token_id, usage.at);
            }
        }
    }
}

/// Keeps the latest use of `id` in `uses`. Allocates only for its first use
/// since the last flush; later ones update the entry in place.
fn note(uses: &mut ById, account_id: &str, id: &str, at: i64, ip: Option<IpAddr>) {
    match uses.get_mut(id) {
        Some(latest) if latest.at >= at => {}
        Some(latest) => {
            latest.at = at;
            latest.ip = ip;
        }
        None => {
            uses.insert(
                id.to_owned(),
                LatestUse {
                    account_id: account_id.to_owned(),
                    at,
                    ip,
                },
            );
        }
    }
}

fn failed(error: &keyward_store::StoreError, what: &str, count: usize) {
    metrics::counter!(crate::telemetry::FLUSH_FAILURES, "buffer" => "usage").increment(1);
    tracing::warn!(%error, count, "could not record {what} usage; will retry");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(key_id: &str, replaced_secret: bool, at: i64, ip: Option<&str>) -> KeyUsage {
        KeyUsage {
            account_id: "acct".into(),
            key_id: key_id.into(),
            replaced_secret,
            at,
            ip: ip.map(str::to_owned),
        }
    }

    #[test]
    fn keeps_only_the_latest_use_per_key_and_secret() {
        let buffer = UsageBuffer::default();
        buffer.record(used("k1", false, 10, Some("10.0.0.1")));
        buffer.record(used("k1", false, 30, Some("10.0.0.3")));
        buffer.record(used("k1", false, 20, Some("10.0.0.2")));
        buffer.record(used("k1", true, 15, None));
        buffer.record(used("k2", false, 5, None));
        buffer.touch_token("acct", "tok_1", 40);
        buffer.touch_token("acct", "tok_1", 35);
        let (mut batch, tokens) = buffer.take();
        batch.sort_by_key(|u| (u.key_id.clone(), u.replaced_secret));
        assert_eq!(batch.len(), 3);
        assert_eq!((batch[1].at, batch[1].replaced_secret), (15, true));
        assert_eq!(
            (batch[0].at, batch[0].ip.as_deref()),
            (30, Some("10.0.0.3"))
        );
        assert_eq!(
            tokens,
            vec![TokenUsage {
                account_id: "acct".into(),
                token_id: "tok_1".into(),
                at: 40
            }]
        );
        let (keys, tokens) = buffer.take();
        assert!(keys.is_empty() && tokens.is_empty());
    }
}
