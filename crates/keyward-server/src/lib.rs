//! Keyward's HTTP server: the admin REST API under `/v1`, the verify
//! endpoint, health probes and the OpenAPI document, over any [`Store`].
//!
//! Request flow: axum router → [`auth`] (management token → principal with
//! effective account permissions) → handler in [`api`] (validates input into
//! core types, calls the store, renders a view) → JSON or an RFC 9457
//! [`problem::Problem`].

pub mod accounts;
pub mod api;
mod auth;
mod clock;
mod extract;
mod idempotency;
pub mod problem;
mod ratelimit;
mod secrets;
mod usage;
pub mod verifier;

use keyward_core::KeyFormat;
use keyward_store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use usage::UsageBuffer;
use verifier::Verifier;

/// Everything a request handler needs, shared by all requests.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub format: KeyFormat,
    pub verifier: Verifier,
}

pub type AppState = Arc<Shared>;

/// A configured server: state plus the background work that must outlive
/// requests (batched last-used writes).
pub struct Server {
    state: AppState,
    usage: Arc<UsageBuffer>,
}

impl Server {
    pub fn new(store: Arc<dyn Store>, format: KeyFormat) -> Self {
        let usage = Arc::new(UsageBuffer::default());
        let verifier = Verifier::new(store.clone(), format.clone(), usage.clone());
        Self {
            state: Arc::new(Shared {
                store,
                format,
                verifier,
            }),
            usage,
        }
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and
    /// flushes buffered last-used writes before returning.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let flusher = tokio::spawn(self.usage.clone().run(self.state.store.clone(), stop_rx));
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = flusher.await;
        served
    }
}
