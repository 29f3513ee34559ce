//! Keeping the verification caches true to the store.
//!
//! Local changes: every admin request that may change something (any method
//! but GET/HEAD/OPTIONS, API or console, except `/v1/verify` itself) drops the
//! cache entries of its caller's account *before* its response leaves, so
//! the change is in effect on this node when the client sees the answer.
//! This is deliberately coarse — per account, for every such request, even
//! one that failed — because it needs no knowledge of what each endpoint
//! touches and cannot miss a new one.
//!
//! The exceptions are opt-in, each handler saying through its
//! [`InvalidationSlot`] what its successful store call did:
//! - only added things (issuing or importing keys, creating a workspace or
//!   an environment, queuing a job, whose worker drops each key it changes
//!   as it goes): only the negative cache is dropped;
//! - changed one key's row and nothing else (update, status, rotation,
//!   credits, deletion): only that key's entries are dropped.
//!
//! A platform issues keys all day (one per new customer, say), and tops up
//! or disables its customers' keys as they pay or leave; dropping the
//! account's cached keys for each would make every hot key of the account
//! a store read again, on every node, after every such call.
//!
//! Other nodes' changes arrive through the store's [`ChangeFeed`]
//! (PostgreSQL LISTEN/NOTIFY), applied by [`follow_changes`], with the same
//! distinctions: the database marks the notification of an inserted key,
//! and names the key of an updated or deleted key row.

use crate::AppState;
use crate::cache::VerifyCache;
use crate::telemetry as m;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use keyward_store::{Change, ChangeFeed};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Put in a mutating request's extensions; authentication fills in the
/// caller's account, and a handler whose change was narrower than the
/// account says so. A handler extracts it (a detached one outside the
/// middleware, which nothing reads).
#[derive(Clone, Default)]
pub struct InvalidationSlot(Arc<SlotState>);

#[derive(Default)]
struct SlotState {
    account_id: OnceLock<String>,
    /// Set by a handler whose change was narrower than the account.
    narrowed: OnceLock<Narrowed>,
}

/// What a handler's change was, when less than its account.
enum Narrowed {
    /// Things no cached key or token depends on were added.
    Added,
    /// One key's row changed (and nothing else a cached record reads).
    Key(String),
}

impl InvalidationSlot {
    pub fn set(&self, account_id: &str) {
        let _ = self.0.account_id.set(account_id.to_owned());
    }

    /// The request's change only added things that no cached key or token
    /// depends on (keys, workspaces, environments, jobs; a new key can only
    /// make a hash known that was cached as unknown): the account's cached keys
    /// stay (see [`VerifyCache::forget_unknown`]). For a handler to call
    /// once its store call succeeded.
    pub fn only_added(&self) {
        let _ = self.0.narrowed.set(Narrowed::Added);
    }

    /// The request's change was to the row of the key `key_id` (and to
    /// what no cached record reads: its credits, the audit log), nothing
    /// else: only that key's entries go (see [`VerifyCache::invalidate_key`]).
    /// For a handler to call once its store call succeeded.
    pub fn only_changed_key(&self, key_id: &str) {
        let _ = self.0.narrowed.set(Narrowed::Key(key_id.to_owned()));
    }
}

impl<S: Sync> FromRequestParts<S> for InvalidationSlot {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<InvalidationSlot>()
            .cloned()
            .unwrap_or_default())
    }
}

pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // The console's forms included: they change the same things.
    // (`/v1/verify` is routed outside this layer.)
    let mutating = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !mutating {
        return next.run(request).await;
    }
    let slot = InvalidationSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let cache = state.verifier.cache();
    match (slot.0.account_id.get(), slot.0.narrowed.get()) {
        // No caller's account (refused, or a sign-in): no account changed.
        (None, _) => {}
        (Some(_), Some(Narrowed::Added)) => {
            cache.forget_unknown();
            metrics::counter!(m::NEGATIVE_DROPS, "reason" => "local").increment(1);
        }
        (Some(_), Some(Narrowed::Key(key_id))) => {
            cache.invalidate_key(key_id);
            metrics::counter!(m::KEY_INVALIDATIONS, "reason" => "local").increment(1);
        }
        (Some(account_id), None) => {
            cache.invalidate_account(account_id);
            metrics::counter!(m::INVALIDATIONS, "reason" => "local").increment(1);
        }
    }
    response
}

/// Applies the changes other nodes commit until `shutdown` fires.
pub async fn follow_changes(
    cache: Arc<VerifyCache>,
    mut feed: ChangeFeed,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let change = tokio::select! {
            change = feed.next() => change,
            _ = shutdown.changed() => return,
        };
        match change {
            Change::Account {
                account_id,
                committed_at,
            } => {
                cache.invalidate_account(&account_id);
                metrics::counter!(m::INVALIDATIONS, "reason" => "remote").increment(1);
                record_lag(committed_at);
            }
            Change::Key {
                key_id,
                committed_at,
            } => {
                cache.invalidate_key(&key_id);
                metrics::counter!(m::KEY_INVALIDATIONS, "reason" => "remote").increment(1);
                record_lag(committed_at);
            }
            Change::AddedKeys { committed_at } => {
                cache.forget_unknown();
                metrics::counter!(m::NEGATIVE_DROPS, "reason" => "remote").increment(1);
                record_lag(committed_at);
            }
            Change::Resync => {
                tracing::info!("change feed re-established; dropping every cached entry");
                cache.resync();
                metrics::counter!(m::RESYNCS).increment(1);
            }
        }
    }
}

/// Commit (the database's clock) to applied here, when the change says.
fn record_lag(committed_at: Option<i64>) {
    if let Some(at) = committed_at {
        let lag_ms = (crate::clock::now_ms() - at).max(0);
        metrics::histogram!(m::INVALIDATION_LAG_SECONDS).record(lag_ms as f64 / 1000.0);
    }
}
