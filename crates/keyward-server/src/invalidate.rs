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
//! Other nodes' changes arrive through the store's [`ChangeFeed`]
//! (PostgreSQL LISTEN/NOTIFY), applied by [`follow_changes`].

use crate::AppState;
use crate::cache::VerifyCache;
use crate::telemetry as m;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use keyward_store::{Change, ChangeFeed};
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Put in a mutating request's extensions; authentication fills in the
/// caller's account.
#[derive(Clone, Default)]
pub struct InvalidationSlot(Arc<OnceLock<String>>);

impl InvalidationSlot {
    pub fn set(&self, account_id: &str) {
        let _ = self.0.set(account_id.to_owned());
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
    if let Some(account_id) = slot.0.get() {
        state.verifier.cache().invalidate_account(account_id);
        metrics::counter!(m::INVALIDATIONS, "reason" => "local").increment(1);
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
                if let Some(at) = committed_at {
                    let lag_ms = (crate::clock::now_ms() - at).max(0);
                    metrics::histogram!(m::INVALIDATION_LAG_SECONDS).record(lag_ms as f64 / 1000.0);
                }
            }
            Change::Resync => {
                tracing::info!("change feed re-established; dropping every cached entry");
                cache.resync();
                metrics::counter!(m::RESYNCS).increment(1);
            }
        }
    }
}
