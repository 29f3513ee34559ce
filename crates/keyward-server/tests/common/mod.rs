//! A real Keyward server on a loopback port, over a fresh database of either
//! backend, and a small HTTP client for it.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod cut_proxy;
pub mod embedded_app;
pub mod upstream;

use embedded_app::EmbeddedApp;
use keyward_core::KeyFormat;
use keyward_core::gateway::RouteTable;
use keyward_server::accounts::{AccountSetup, create_account};
use keyward_server::embed::{EmbedOptions, Keyward};
use keyward_server::gateway::{GatewayConfig, UpstreamTls};
use keyward_server::{Server, ServerConfig};
use keyward_store::Store;
use keyward_store::testing::{Backend, TestDatabase};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use upstream::EchoUpstream;

/// Every test owner's console password.
pub const OWNER_PASSWORD: &str = "correct horse battery";

pub struct Tenant {
    pub account_id: String,
    /// The owner's email, to sign in to the console with [`OWNER_PASSWORD`].
    pub email: String,
    pub workspace_id: String,
    pub token: String,
    /// The "Primary" ingest key every new workspace starts with.
    pub primary_key_id: String,
}

pub struct TestServer {
    pub base: String,
    /// The private verify listener, bound to the owner's account.
    pub private_base: String,
    /// The gateway (`keyward proxy`) for the owner's account, with
    /// [`GATEWAY_ROUTES`], in front of `upstream`.
    pub gateway_base: String,
    pub upstream: EchoUpstream,
    /// A service with this server's verifier embedded as a tower layer
    /// ([`Server::embedded`], sharing its cache), for the owner's account
    /// and its production environment.
    pub app: EmbeddedApp,
    pub owner: Tenant,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    db: TestDatabase,
}

static ACCOUNTS: AtomicU32 = AtomicU32::new(0);

/// The routes of every test server's gateway.
pub const GATEWAY_ROUTES: &str = r#"
environment = "production"

[[route]]
method = "GET"
path = "/orders/{id}"
permissions = ["orders:read"]

[[route]]
method = "DELETE"
path = "/orders/{id}"
permissions = ["orders:read", "orders:write"]

[[route]]
method = "*"
path = "/public/{*rest}"

[[route]]
method = "GET"
path = "/customers/{customer}/orders"
permissions = ["orders:read"]
customer = "customer"

[[route]]
method = "GET"
path = "/invoices"
permissions = ["orders:read"]
customer_header = "X-Customer-Id"

[[route]]
method = "POST"
path = "/reports"
cost = 5
"#;

/// How long a test gateway waits for the upstream's answer.
pub const GATEWAY_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

impl TestServer {
    /// `None` when the backend is unavailable and skipping is allowed here.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, ServerConfig::default()).await
    }

    pub async fn start_with(backend: Backend, config: ServerConfig) -> Option<Self> {
        let db = TestDatabase::create_or_skip(backend).await?;
        let url = db.url.clone();
        Some(Self::start_on(db, &url, config).await)
    }

    /// A server on `db`, reaching it through `url` (a proxy, say).
    pub async fn start_on(db: TestDatabase, url: &str, config: ServerConfig) -> Self {
        let store = keyward_store::open(url).await.expect("open store");
        let owner = new_tenant(store.as_ref()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let private = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let private_base = format!("http://{}", private.local_addr().unwrap());
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_base = format!("http://{}", gateway.local_addr().unwrap());
        let upstream = EchoUpstream::start().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::with_config(store.clone(), KeyFormat::default(), config)
            .with_private_verify(private, &owner.account_id)
            .with_gateway(
                gateway,
                GatewayConfig {
                    account_id: owner.account_id.clone(),
                    upstream: upstream.base.parse().unwrap(),
                    routes: RouteTable::from_toml(GATEWAY_ROUTES).unwrap(),
                    upstream_timeout: GATEWAY_UPSTREAM_TIMEOUT,
                    // As if a load balancer on this host fronted it.
                    trusted_proxies: vec![keyward_core::ip::parse_rule("127.0.0.1").unwrap()],
                    upstream_tls: UpstreamTls::trusting_nobody().unwrap(),
                },
            );
        let app = EmbeddedApp::start(&server.embedded(embed_options(&owner))).await;
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            private_base,
            gateway_base,
            upstream,
            app,
            owner,
            store,
            client: reqwest::Client::new(),
            stop: Some(stop),
            db,
        }
    }

    /// Another node of the same deployment: a second server on the same
    /// store, configured with `config`; it stops when the `Node` drops.
    pub async fn another_node(&self, config: ServerConfig) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::with_config(self.store.clone(), KeyFormat::default(), config);
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Node { base, _stop: stop }
    }

    /// An embedded verifier of its own over this server's store, as a
    /// service of the platform would start one ([`Keyward::start`]).
    pub async fn standalone_keyward(&self) -> Keyward {
        Keyward::start(
            self.store.clone(),
            KeyFormat::default(),
            ServerConfig::default(),
            embed_options(&self.owner),
        )
        .await
        .expect("start an embedded verifier")
    }

    /// Verifies with the owner's token on any node; returns the verdict's code.
    pub async fn code_on(&self, base: &str, body: Value) -> String {
        let response = self
            .client
            .post(format!("{base}/v1/verify"))
            .bearer_auth(&self.owner.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let verdict: Value = response.json().await.unwrap();
        verdict["code"].as_str().unwrap().to_owned()
    }

    /// The database behind the server, for tests that must reach under the
    /// API (simulating a crash, tampering).
    pub fn database_url(&self) -> &str {
        &self.db.url
    }

    /// Another tenant of the same deployment.
    pub async fn new_tenant(&self) -> Tenant {
        new_tenant(self.store.as_ref()).await
    }

    pub async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(token, method, path, body, &[]).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// POSTs with the owner's token to another node of the deployment.
    pub async fn post_on(&self, base: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{base}{path}"))
            .bearer_auth(&self.owner.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(&self.owner.token, Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(&self.owner.token, Method::POST, path, Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(&self.owner.token, Method::PATCH, path, Some(body))
            .await
    }

    /// Adds `names` to the owner's permission catalog.
    pub async fn catalog(&self, names: &[&str]) {
        for name in names {
            let (status, body) = self.post("/v1/permissions", json!({"name": name})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }

    /// Issues a key in the owner's default workspace; returns (key, secret).
    pub async fn issue(&self, body: Value) -> (Value, String) {
        self.issue_as(&self.owner, body).await
    }

    /// Issues a key in `tenant`'s default workspace, with its token.
    pub async fn issue_as(&self, tenant: &Tenant, body: Value) -> (Value, String) {
        let path = format!("/v1/workspaces/{}/keys", tenant.workspace_id);
        let (status, created) = self
            .call(&tenant.token, Method::POST, &path, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let secret = created["secret"].as_str().unwrap().to_owned();
        (created["key"].clone(), secret)
    }

    /// Verifies with the owner's token; returns (verdict, response headers).
    pub async fn verify(&self, body: Value) -> (Value, reqwest::header::HeaderMap) {
        let response = self
            .send(
                &self.owner.token,
                Method::POST,
                "/v1/verify",
                Some(body),
                &[],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        (response.json().await.unwrap(), headers)
    }

    /// `POST /v1/verify` on the private listener, without a token.
    pub async fn verify_privately(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/v1/verify", self.private_base))
            .json(&body)
            .send()
            .await
            .expect("request");
        (response.status(), response.json().await.unwrap())
    }

    /// The `/metrics` text (the recorder is process-wide: other tests'
    /// servers count into it too).
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One sample of `/metrics` (0 when absent). The `metrics` facade's
    /// series are shared by every server of the test process, so callers
    /// compare increases; the verify path's own (verdicts, cache lookups)
    /// are this server's.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The verdict's code for a request.
    pub async fn code(&self, body: Value) -> String {
        self.verify(body).await.0["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A second server over a [`TestServer`]'s store.
pub struct Node {
    pub base: String,
    _stop: oneshot::Sender<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What every test's embedded verifier accepts: the owner's production keys.
fn embed_options(owner: &Tenant) -> EmbedOptions {
    EmbedOptions::for_account(&owner.account_id).in_environment("production")
}

async fn new_tenant(store: &dyn Store) -> Tenant {
    let n = ACCOUNTS.fetch_add(1, Ordering::Relaxed);
    let email = format!("owner{n}@example.com");
    let created = create_account(
        store,
        &KeyFormat::default(),
        AccountSetup {
            account_name: format!("Tenant {n}"),
            owner_email: email.clone(),
            owner_password: zeroize::Zeroizing::new(OWNER_PASSWORD.into()),
            workspace_name: "Default workspace".into(),
        },
    )
    .await
    .expect("create account");
    Tenant {
        email,
        account_id: created.account_id,
        workspace_id: created.workspace_id,
        token: created.management_token.expose().to_owned(),
        primary_key_id: created.primary_site_id,
    }
}

/// Serves `app` (with the peer's address) on a free loopback port until the
/// returned sender is used or dropped; returns its base URL.
pub async fn serve_on_loopback(app: axum::Router) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });
    (base, stop)
}

/// Polls `probe` until it returns `Some`, failing after `limit`. For effects
/// that happen asynchronously (batched writes); the limit is a generous
/// failure deadline, not a performance assertion.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs each listed async test against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = $crate::common::TestServer::start(keyward_store::testing::Backend::Sqlite).await {
                        super::$name(server).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(server) = $crate::common::TestServer::start(keyward_store::testing::Backend::Postgres).await {
                        super::$name(server).await;
                    }
                }
            )*
        }
    };
}

/// Runs each listed async test, which takes the `Backend` and starts what
/// it needs (a server with its own configuration, say), on both stores.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(keyward_store::testing::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(keyward_store::testing::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Now, in Unix milliseconds, as the store records times.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}
