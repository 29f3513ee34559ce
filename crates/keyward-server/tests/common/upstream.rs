//! The API behind a test gateway: it answers every request with what it
//! received, and counts them, so a test can see exactly what the gateway
//! forwarded (and that a denial forwarded nothing).

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Json;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

pub struct EchoUpstream {
    pub base: String,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

/// A path the upstream answers only after longer than any gateway waits.
pub const SLOW_PATH: &str = "/public/slow";

impl EchoUpstream {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new().fallback(echo).with_state(hits.clone());
        let (base, stop) = super::serve_on_loopback(app).await;
        Self {
            base,
            hits,
            stop: Some(stop),
        }
    }

    /// Requests that reached the upstream so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops answering: the gateway then finds nobody at the address.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn echo(State(hits): State<Arc<AtomicUsize>>, request: Request) -> Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    if request.uri().path() == SLOW_PATH {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        let value = Value::String(value.to_str().unwrap_or("<binary>").to_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            _ => {
                headers.insert(name.as_str().to_owned(), Value::Array(vec![value]));
            }
        }
    }
    Json(json!({
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "headers": headers,
    }))
}
