//! Keyward inside your own Rust service (SPEC §5, "Rust library / tower
//! layer"): the same verification engine as `POST /v1/verify` and the
//! gateway — cache, invalidation, rate limits, outage grace, request logs
//! and last use — as a tower layer in front of your axum routes.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Extension, Router, routing::get};
//! use keyward_server::embed::{EmbedOptions, Keyward, VerifiedKey};
//!
//! let store = keyward_store::open("postgres://keyward@db/keyward").await?;
//! let keyward = Keyward::start(
//!     store,
//!     keyward_core::KeyFormat::default(),
//!     Default::default(),
//!     EmbedOptions::for_account("acct_…").in_environment("production"),
//! )
//! .await?;
//! let app: Router = Router::new()
//!     .route("/orders", get(|Extension(key): Extension<VerifiedKey>| async move {
//!         format!("orders of {:?}", key.customer_id())
//!     }))
//!     .route_layer(keyward.require(["orders:read"])?);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! // With the peer's address, so that IP allowlists can be checked.
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! keyward.shutdown().await; // flushes buffered request logs and last use
//! # Ok(()) }
//! ```
//!
//! A request the key does not admit is answered by the layer, as the
//! gateway answers it: an RFC 9457 problem whose `code` is the verification
//! code (401 with `WWW-Authenticate`, 403, 429 with `Retry-After` and
//! `RateLimit` headers, 503 when the store is down and the key not cached).
//! An admitted request reaches the route without its credential and with a
//! [`VerifiedKey`] extension.
//!
//! Keyward records its metrics (`keyward_*`) through the `metrics` crate's
//! global recorder: install your service's recorder before starting
//! Keyward and they go to yours; otherwise Keyward installs a Prometheus
//! one, and a recorder installed later is refused.

use crate::cache::CachedKey;
use crate::request_check::{RequestCheck, RouteDemand, customer_in, remove_credential};
use crate::{AppState, Background, Server, ServerConfig, WithJobs};
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, Request};
use axum::response::Response;
use ipnet::IpNet;
use keyward_core::gateway::CustomerSource;
use keyward_core::{InvalidValue, KeyFormat, PermissionName};
use keyward_store::Store;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Mutex;

/// Whose keys the embedded verifier accepts, and how it reads requests.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Keys of any other account are `unknown_key`.
    pub account_id: String,
    /// The environment your service serves; keys of others are
    /// `wrong_environment`. `None` accepts every environment.
    pub environment: Option<String>,
    /// Your own proxies in front of the service: from them, the client's
    /// address is the right-most `X-Forwarded-For` entry that is not one of
    /// them (see [`keyward_core::ip::client_address`]).
    pub trusted_proxies: Vec<IpNet>,
}

impl EmbedOptions {
    pub fn for_account(account_id: impl Into<String>) -> Self {
        Self {
            account_id: account_id.into(),
            environment: None,
            trusted_proxies: Vec::new(),
        }
    }

    pub fn in_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    pub fn trusting_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }
}

/// The embedded verifier. Cheap to clone; every clone shares one cache.
#[derive(Clone)]
pub struct Keyward {
    inner: Arc<Inner>,
}

struct Inner {
    check: RequestCheck,
    /// The background work this handle started itself ([`Keyward::start`]);
    /// `None` once shut down, or when a [`Server`] runs it.
    background: Mutex<Option<Background>>,
}

impl Keyward {
    /// A verifier of its own over `store`, as one more node of the
    /// deployment: it follows the other nodes' changes through the store
    /// (PostgreSQL), and leaves the admin API and background jobs to
    /// `keyward serve`. With SQLite, which only one process may change,
    /// use [`Server::embedded`] instead.
    ///
    /// Fails if the account does not exist: a typo would otherwise refuse
    /// every key.
    pub async fn start(
        store: Arc<dyn Store>,
        format: KeyFormat,
        config: ServerConfig,
        options: EmbedOptions,
    ) -> std::io::Result<Self> {
        let known = crate::accounts::exists(store.as_ref(), &options.account_id)
            .await
            .map_err(std::io::Error::other)?;
        if !known {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no account {} in this store", options.account_id),
            ));
        }
        let server = Server::with_config(store, format, config);
        let background = server.start_background(WithJobs::No).await?;
        Ok(Self::over(server.state.clone(), options, Some(background)))
    }

    fn over(state: AppState, options: EmbedOptions, background: Option<Background>) -> Self {
        Self {
            inner: Arc::new(Inner {
                check: RequestCheck {
                    state,
                    account_id: options.account_id,
                    environment: options.environment,
                    trusted_proxies: options.trusted_proxies,
                },
                background: Mutex::new(background),
            }),
        }
    }

    /// A layer that admits only requests whose key holds every one of
    /// `permissions` (none: any valid key). Fails on a malformed name.
    pub fn require<I>(&self, permissions: I) -> Result<RequireKey, InvalidValue>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut permissions = permissions
            .into_iter()
            .map(|name| PermissionName::parse(name.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        permissions.sort();
        permissions.dedup();
        Ok(RequireKey {
            keyward: self.clone(),
            permissions: permissions.into(),
            customer: None,
            cost: 1,
        })
    }

    /// Stops the background work [`Keyward::start`] began, flushing the
    /// buffered request logs and last-use times. Verification keeps
    /// answering from the cache afterwards; call it when the service stops.
    pub async fn shutdown(&self) {
        if let Some(background) = self.inner.background.lock().await.take() {
            background.stop().await;
        }
    }
}

impl Server {
    /// The verifier of this server, to embed in the same process: it shares
    /// the server's cache, so a change made through this server's API
    /// takes effect on the layer before the API call returns. The server's
    /// [`Server::serve`] or [`Server::run`] runs its background work.
    pub fn embedded(&self, options: EmbedOptions) -> Keyward {
        Keyward::over(self.state.clone(), options, None)
    }
}

/// The key that a request was admitted with, as an extension of the
/// request. It shares the cache's record: cloning it copies nothing.
#[derive(Clone)]
pub struct VerifiedKey(Arc<CachedKey>);

impl VerifiedKey {
    pub fn id(&self) -> &str {
        &self.0.record().key.id
    }

    pub fn name(&self) -> &str {
        &self.0.record().key.name
    }

    pub fn workspace_id(&self) -> &str {
        &self.0.record().key.workspace_id
    }

    pub fn environment(&self) -> &str {
        &self.0.record().key.environment
    }

    /// The one customer the key acts for, if it is scoped to one.
    pub fn customer_id(&self) -> Option<&str> {
        self.0.record().key.customer_id.as_deref()
    }

    /// Every permission the key holds (more than the route asked for).
    pub fn permissions(&self) -> &[PermissionName] {
        &self.0.record().key.permissions
    }

    /// The key's `meta` object.
    pub fn meta(&self) -> &Map<String, Value> {
        &self.0.record().key.meta
    }
}

impl fmt::Debug for VerifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedKey")
            .field("id", &self.id())
            .field("workspace_id", &self.workspace_id())
            .finish_non_exhaustive()
    }
}

/// A tower layer (from [`Keyward::require`]) for axum routes.
#[derive(Clone)]
pub struct RequireKey {
    keyward: Keyward,
    permissions: Arc<[PermissionName]>,
    /// Where a request names the customer it acts for.
    customer: Option<Arc<CustomerSource>>,
    /// Credits a metered key spends on each request.
    cost: u64,
}

impl RequireKey {
    /// Also refuses (`403 customer_mismatch`) a key scoped to a customer
    /// other than the one the route's path parameter `name` names, as in
    /// `/customers/{customer}/invoices` with `name = "customer"`. Keys with
    /// no customer scope act for any customer. A route without that
    /// parameter refuses every customer-scoped key: fail closed.
    pub fn for_customer_parameter(mut self, name: &str) -> Self {
        self.customer = Some(Arc::new(CustomerSource::PathParameter(name.into())));
        self
    }

    /// Also refuses (`403 customer_mismatch`) a key scoped to a customer
    /// other than the one request header `name` names (`X-Customer-Id`,
    /// say). A request without the header, with several, or with one that
    /// is not UTF-8 names no customer: every customer-scoped key is refused
    /// on it, and keys with no customer scope pass.
    pub fn for_customer_header(mut self, name: &str) -> Self {
        self.customer = Some(Arc::new(CustomerSource::Header(name.into())));
        self
    }

    /// Takes `credits` (instead of 1) from a metered key's balance for each
    /// request: an expensive endpoint's price, or 0 for one that only
    /// needs some credits left. Keys without credits are not affected.
    pub fn costing(mut self, credits: u64) -> Self {
        self.cost = credits;
        self
    }

    /// The customer the request acts for, when this layer reads one.
    async fn customer_of(&self, request: Request) -> (Request, Option<String>) {
        let name = match self.customer.as_deref() {
            None => return (request, None),
            Some(CustomerSource::Header(name)) => {
                let customer = customer_in(request.headers(), name).to_owned();
                return (request, Some(customer));
            }
            Some(CustomerSource::PathParameter(name)) => name,
        };
        let (mut parts, body) = request.into_parts();
        let customer = match RawPathParams::from_request_parts(&mut parts, &()).await {
            Ok(params) => params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.to_owned()),
            Err(_) => None,
        };
        if customer.is_none() {
            tracing::warn!(parameter = %name, "the route has no such path parameter; customer-scoped keys are refused");
        }
        // No customer id is empty, so "" matches no scoped key.
        (
            Request::from_parts(parts, body),
            Some(customer.unwrap_or_default()),
        )
    }

    async fn admit<S>(self, request: Request, mut inner: S) -> Result<Response, Infallible>
    where
        S: tower::Service<Request, Response = Response, Error = Infallible>,
    {
        let (mut request, customer_id) = self.customer_of(request).await;
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        let checked = self
            .keyward
            .inner
            .check
            .verify(
                peer,
                request.method(),
                request.uri().path(),
                request.headers(),
                RouteDemand {
                    permissions: &self.permissions,
                    customer_id: customer_id.as_deref(),
                    cost: self.cost,
                },
            )
            .await;
        let admitted = match checked {
            Ok(admitted) => admitted,
            Err(refusal) => return Ok(refusal.into_response()),
        };
        remove_credential(request.headers_mut());
        if let Some(key) = admitted.verdict.key.clone() {
            request.extensions_mut().insert(VerifiedKey(key));
        }
        let mut response = inner.call(request).await?;
        if let Some(state) = &admitted.verdict.rate_limit {
            state.write_headers(response.headers_mut());
        }
        Ok(response)
    }
}

impl<S> tower::Layer<S> for RequireKey {
    type Service = RequireKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKeyService {
            inner,
            rule: self.clone(),
        }
    }
}

/// The service [`RequireKey`] wraps a route in.
#[derive(Clone)]
pub struct RequireKeyService<S> {
    inner: S,
    rule: RequireKey,
}

impl<S> tower::Service<Request> for RequireKeyService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The service polled ready is the one to call; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let rule = self.rule.clone();
        Box::pin(rule.admit(request, inner))
    }
}
