//! Keyward's HTTP server: the admin REST API under `/v1`, the verify
//! endpoint, health probes and the OpenAPI document, over any [`Store`].
//!
//! Request flow: axum router → `auth` (management token → principal with
//! effective account permissions) → handler in [`api`] (validates input into
//! core types, calls the store, renders a view) → JSON or an RFC 9457
//! [`problem::Problem`].

pub mod accounts;
pub mod api;
mod auth;
pub mod cache;
mod clock;
mod console;
pub mod embed;
mod export;
mod extract;
pub mod gateway;
mod idempotency;
mod invalidate;
mod jobs;
mod outage;
pub mod problem;
mod ratelimit;
mod request_check;
pub mod request_logs;
pub mod secret_scanning;
mod secrets;
pub mod shared_limit;
mod tally;
pub mod telemetry;
mod usage;
pub mod verifier;

use axum::ServiceExt as _;
use cache::{CacheConfig, VerifyCache};
use keyward_core::KeyFormat;
use keyward_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use ratelimit::RateLimits;
use request_logs::RequestLogBuffer;
use shared_limit::SharedLimits;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use verifier::Verifier;

/// Everything a request handler needs, shared by all requests.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub format: KeyFormat,
    pub verifier: Verifier,
    pub metrics: PrometheusHandle,
    pub console: console::ConsoleState,
    /// Set when GitHub's secret scanning alerts are accepted.
    pub github_keys: Option<Arc<secret_scanning::GithubPublicKeys>>,
    /// Keys may be imported by hash (see `ServerConfig`).
    pub accept_imported_keys: bool,
}

pub type AppState = Arc<Shared>;

/// What a deployment tunes about the verify path.
#[derive(Clone)]
pub struct ServerConfig {
    pub cache: CacheConfig,
    /// Rate limits shared by all nodes through Redis; `None` keeps them per
    /// node.
    pub shared_limits: Option<Arc<SharedLimits>>,
    /// Request logs older than this are purged.
    pub log_retention_days: u32,
    /// Request-log entries buffered at most per verifying thread between
    /// flushes (one list per runtime worker; see `request_logs`).
    pub log_buffer_capacity: usize,
    /// Console cookies carry `Secure`. Browsers accept such cookies from
    /// `https://` and from `http://localhost`/`127.0.0.1`; turn it off only
    /// to serve the console over plain HTTP on another address.
    pub secure_cookies: bool,
    /// Accept GitHub's secret scanning alerts, checked against these keys;
    /// `None` leaves `/v1/secret-scanning/github` unrouted (404).
    pub github_secret_scanning: Option<Arc<secret_scanning::GithubPublicKeys>>,
    /// Verify keys imported from elsewhere by their hash
    /// (`POST /v1/workspaces/{id}/keys/import`, refused while off): a
    /// credential not in this deployment's format is then looked up as one
    /// such key's secret instead of being refused as malformed unread.
    pub accept_imported_keys: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            cache: CacheConfig::default(),
            shared_limits: None,
            log_retention_days: 30,
            log_buffer_capacity: request_logs::DEFAULT_CAPACITY,
            secure_cookies: true,
            github_secret_scanning: None,
            accept_imported_keys: false,
        }
    }
}

/// A configured server: state plus the background work that must outlive
/// requests (batched last-used and request-log writes, the job worker, and
/// following other nodes' changes).
pub struct Server {
    state: AppState,
    config: ServerConfig,
    logs: Arc<RequestLogBuffer>,
    cache: Arc<VerifyCache>,
    rate_limits: Arc<RateLimits>,
    /// What is served besides the admin API: the private verify listener
    /// and the gateway, each on its own listener.
    listeners: Vec<(TcpListener, api::Listening)>,
}

impl Server {
    pub fn new(store: Arc<dyn Store>, format: KeyFormat) -> Self {
        Self::with_config(store, format, ServerConfig::default())
    }

    pub fn with_config(store: Arc<dyn Store>, format: KeyFormat, config: ServerConfig) -> Self {
        // First: the cache and the verifier register their metrics with it.
        let metrics = telemetry::install();
        let logs = Arc::new(RequestLogBuffer::new(config.log_buffer_capacity));
        let cache = Arc::new(VerifyCache::new(config.cache));
        let rate_limits = Arc::new(RateLimits::default());
        let verifier = Verifier::new(
            store.clone(),
            format.clone(),
            logs.clone(),
            cache.clone(),
            rate_limits.clone(),
            config.shared_limits.clone(),
            config.accept_imported_keys,
        );
        Self {
            state: Arc::new(Shared {
                store,
                format,
                verifier,
                metrics,
                console: console::ConsoleState::new(config.secure_cookies),
                github_keys: config.github_secret_scanning.clone(),
                accept_imported_keys: config.accept_imported_keys,
            }),
            config,
            logs,
            cache,
            rate_limits,
            listeners: Vec::new(),
        }
    }

    /// Also serves `POST /v1/verify` on `listener` without a token, for the
    /// keys of `account_id` only (SPEC §5: "unauthenticated when the
    /// operator binds it to a private listener on purpose"). The listener
    /// serves nothing else but `/healthz`.
    pub fn with_private_verify(mut self, listener: TcpListener, account_id: &str) -> Self {
        let listening = api::Listening::private_verify(api::PrivateVerify {
            state: self.state.clone(),
            account_id: account_id.into(),
        });
        self.listeners.push((listener, listening));
        self
    }

    /// Also serves the gateway (`keyward proxy`, see [`gateway`]) on
    /// `listener`: every request there is verified, then forwarded to the
    /// upstream or refused.
    pub fn with_gateway(mut self, listener: TcpListener, config: gateway::GatewayConfig) -> Self {
        let gateway = Arc::new(gateway::Gateway::new(self.state.clone(), config));
        let listening = api::Listening::router_only(gateway::router(gateway));
        self.listeners.push((listener, listening));
        self
    }

    /// The verification engine, for embedding and benchmarks.
    pub fn verifier(&self) -> &Verifier {
        &self.state.verifier
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves the admin API on `listener`, and whatever else was added,
    /// until `shutdown` resolves; see [`Self::run`].
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let api = api::Listening::api(self.state.clone());
        self.listeners.insert(0, (listener, api));
        self.run(shutdown).await
    }

    /// Serves the listeners added to the server (without the admin API,
    /// unless through [`Self::serve`]) until `shutdown` resolves, then
    /// drains in-flight requests and flushes buffered last-used and
    /// request-log writes before returning.
    ///
    /// The background work is [`Self::start_background`]'s.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if self.listeners.is_empty() {
            return Err(std::io::Error::other("nothing to serve: no listener"));
        }
        let background = self.start_background(WithJobs::Yes).await?;
        let served = self.serve_listeners(shutdown).await;
        background.stop().await;
        served
    }

    /// Starts what must run beside the requests: the batched writes, rate
    /// limiter pruning, the outage probe, following other nodes' changes
    /// and, with [`WithJobs::Yes`], the job worker.
    ///
    /// On a store shared between nodes, it first subscribes to the store's
    /// change feed, so that no change committed after the first request is
    /// missed.
    async fn start_background(&self, jobs: WithJobs) -> std::io::Result<Background> {
        let store = self.state.store.clone();
        let feed = store.change_feed().await.map_err(std::io::Error::other)?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(self.logs.clone().run(store.clone(), stop_rx.clone())),
            tokio::spawn(self.rate_limits.clone().run_pruning(stop_rx.clone())),
        ];
        if jobs == WithJobs::Yes {
            let worker = jobs::Worker::new(
                store.clone(),
                self.cache.clone(),
                self.state.format.clone(),
                self.config.log_retention_days,
            );
            tasks.push(tokio::spawn(worker.run(stop_rx.clone())));
        }
        tasks.push(tokio::spawn(telemetry::run_upkeep(
            self.state.metrics.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(
            self.state
                .verifier
                .outage()
                .clone()
                .run_probe(store.clone(), stop_rx.clone()),
        ));
        if let Some(feed) = feed {
            tasks.push(tokio::spawn(invalidate::follow_changes(
                self.cache.clone(),
                feed,
                stop_rx,
            )));
        }
        if let Some(shared) = &self.config.shared_limits {
            shared.connect().await;
        }
        Ok(Background { stop, tasks })
    }

    /// Serves every listener until `shutdown` resolves; then each drains
    /// its requests.
    async fn serve_listeners(
        &mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (quit_tx, quit_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = quit_tx.send(true);
        });
        let mut served = tokio::task::JoinSet::new();
        for (listener, listening) in self.listeners.drain(..) {
            let mut quit = quit_rx.clone();
            let serving = axum::serve(
                listener,
                listening.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = quit.wait_for(|quit| *quit).await;
            });
            served.spawn(serving.into_future());
        }
        let mut outcome = Ok(());
        while let Some(result) = served.join_next().await {
            let result = result.map_err(std::io::Error::other).and_then(|r| r);
            outcome = outcome.and(result);
        }
        outcome
    }
}

/// Whether a process runs the job worker: a server does; a service that
/// embeds the verifier leaves jobs to the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WithJobs {
    Yes,
    No,
}

/// The running background work of [`Server::start_background`].
struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Stops every task and waits for it; the write buffers flush on the way out.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
