//! PostgreSQL: a pool and the migrations. Tables go to the connection's
//! `search_path` (tests select a schema of their own through the URL).
//!
//! Also the change feed: the `0002` migration's triggers send
//! `NOTIFY keyward_changes, '<account_id> <ms>'` on every committed change
//! that verification or token authentication depends on (since `0014`,
//! `'<account_id> <ms> added'` for an inserted key and `'<account_id> <ms>
//! key <key_id>'` for an updated or deleted one), and [`ChangeFeed`]
//! listens for them on a connection of its own.

use crate::error::{StoreError, StoreResult};
use crate::request_logs::Change;
use crate::sql::{Dialect, SqlStore, connect};
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgListener;
use std::time::Duration;

/// The channel the `0002` migration's triggers notify.
const CHANNEL: &str = "keyward_changes";
/// The longest wait between two attempts to re-establish the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) async fn open(url: &str) -> StoreResult<SqlStore> {
    let pool = connect(AnyPoolOptions::new(), url).await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore::new(pool.clone(), pool, Dialect::Postgres).with_listen_url(url))
}

/// Changes committed to the database by any node, as [`Change`]s.
///
/// When the listening connection drops, notifications sent meanwhile are
/// lost; the feed reconnects (with backoff) and, once it listens again,
/// yields [`Change::Resync`] so that the caller drops everything it cached.
pub struct ChangeFeed {
    url: String,
    listener: Option<PgListener>,
}

impl std::fmt::Debug for ChangeFeed {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("listening", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    pub(crate) async fn start(url: &str) -> StoreResult<Self> {
        let listener = listen(url).await?;
        Ok(Self {
            url: url.to_owned(),
            listener: Some(listener),
        })
    }

    /// Waits for the next change. Never fails: connection trouble turns into
    /// retries and, once listening again, a [`Change::Resync`].
    pub async fn next(&mut self) -> Change {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(listener) = self.listener.as_mut() else {
                match listen(&self.url).await {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        return Change::Resync;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "change feed: cannot listen; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            };
            // `try_recv` answers `None` when the connection was lost; we then
            // reconnect ourselves so that the resync follows the new LISTEN.
            match listener.try_recv().await {
                Ok(Some(notification)) => return parse(notification.payload()),
                Ok(None) => {
                    tracing::warn!("change feed: connection lost; reconnecting");
                    self.listener = None;
                }
                Err(error) => {
                    tracing::warn!(%error, "change feed: receive failed; reconnecting");
                    self.listener = None;
                }
            }
        }
    }
}

async fn listen(url: &str) -> StoreResult<PgListener> {
    let mut listener = PgListener::connect(url)
        .await
        .map_err(StoreError::Unavailable)?;
    listener
        .listen(CHANNEL)
        .await
        .map_err(StoreError::Unavailable)?;
    Ok(listener)
}

/// What the `0014` migration's trigger appends to the payload of an
/// inserted key; an updated or deleted one's gets `key <key_id>`.
const ADDED_KEYS: &str = "added";

/// `<account_id> <ms>`, `<account_id> <ms> added` or `<account_id> <ms> key
/// <key_id>`; a payload with no account (which only a foreign NOTIFY on our
/// channel could send) is treated as a change of everything, and one with
/// an unknown tail as a change of its account.
fn parse(payload: &str) -> Change {
    let parts: Vec<&str> = payload.split(' ').collect();
    let committed_at = || parts.get(1).and_then(|at| at.parse().ok());
    match parts.as_slice() {
        [account_id, _, tail @ ..] if !account_id.is_empty() => match tail {
            [ADDED_KEYS] => Change::AddedKeys {
                committed_at: committed_at(),
            },
            ["key", key_id] if !key_id.is_empty() => Change::Key {
                key_id: (*key_id).to_owned(),
                committed_at: committed_at(),
            },
            _ => Change::Account {
                account_id: (*account_id).to_owned(),
                committed_at: committed_at(),
            },
        },
        _ => Change::Resync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_account_and_the_time() {
        assert_eq!(
            parse("acct_01 1700000000123"),
            Change::Account {
                account_id: "acct_01".into(),
                committed_at: Some(1_700_000_000_123)
            }
        );
        assert_eq!(
            parse("acct_01 1700000000123 added"),
            Change::AddedKeys {
                committed_at: Some(1_700_000_000_123)
            }
        );
        assert_eq!(
            parse("acct_01 1700000000123 key key_01abc"),
            Change::Key {
                key_id: "key_01abc".into(),
                committed_at: Some(1_700_000_000_123)
            }
        );
        for unknown_tail in [
            "acct_01 1700000000123 renamed",
            "acct_01 1700000000123 key",
            "acct_01 1700000000123 key a b",
        ] {
            assert_eq!(
                parse(unknown_tail),
                Change::Account {
                    account_id: "acct_01".into(),
                    committed_at: Some(1_700_000_000_123)
                },
                "{unknown_tail:?} is a change of the account"
            );
        }
        assert_eq!(parse("garbage"), Change::Resync);
        assert_eq!(parse(" 1700000000123 added"), Change::Resync);
    }
}
