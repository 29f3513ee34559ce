//! A service of the platform's own with Keyward embedded as a tower layer:
//! its routes answer with the identity the layer handed them, and count
//! calls, so a test can see that a denial never reached a route.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Json;
use axum::routing::{get, post};
use keyward_server::embed::{Keyward, VerifiedKey};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

pub struct EmbeddedApp {
    pub base: String,
    hits: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl EmbeddedApp {
    /// Serves, on a loopback port, `GET /orders/{id}` (needs `orders:read`),
    /// `GET /customers/{customer}/orders` (the same, for that customer),
    /// `GET /invoices` (the same, for the customer `X-Customer-Id` names)
    /// `GET /whoami` (any valid key) and `POST /reports` (any valid key,
    /// costing a metered key 5 credits), all behind `keyward`'s layer.
    pub async fn start(keyward: &Keyward) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/orders/{id}",
                get(identity).route_layer(keyward.require(["orders:read"]).unwrap()),
            )
            .route(
                "/customers/{customer}/orders",
                get(identity).route_layer(
                    keyward
                        .require(["orders:read"])
                        .unwrap()
                        .for_customer_parameter("customer"),
                ),
            )
            .route(
                "/invoices",
                get(identity).route_layer(
                    keyward
                        .require(["orders:read"])
                        .unwrap()
                        .for_customer_header("X-Customer-Id"),
                ),
            )
            .route(
                "/whoami",
                get(identity).route_layer(keyward.require(Vec::<String>::new()).unwrap()),
            )
            .route(
                "/reports",
                post(identity)
                    .route_layer(keyward.require(Vec::<String>::new()).unwrap().costing(5)),
            )
            .with_state(hits.clone());
        let (base, stop) = super::serve_on_loopback(app).await;
        Self {
            base,
            hits,
            _stop: stop,
        }
    }

    /// How many requests reached a route.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn identity(
    State(hits): State<Arc<AtomicUsize>>,
    Extension(key): Extension<VerifiedKey>,
    headers: HeaderMap,
) -> Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "key_id": key.id(),
        "name": key.name(),
        "workspace_id": key.workspace_id(),
        "environment": key.environment(),
        "customer_id": key.customer_id(),
        "permissions": key.permissions(),
        "meta": key.meta(),
        "credential_seen": headers.contains_key("authorization") || headers.contains_key("x-api-key"),
    }))
}
