//! `keyward proxy`, the real binary: a gateway in front of an upstream,
//! started the way an operator would, refusing bad configuration at start.

mod common;

use axum::Router;
use axum::extract::Request;
use common::{Serving, initialised, keyward};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;

/// An upstream answering with the identity headers it received and
/// whether a credential reached it.
async fn start_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream_app()).await });
    base
}

fn upstream_app() -> Router {
    Router::new().fallback(|request: Request| async move {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        axum::Json(json!({
            "path": request.uri().path(),
            "key_id": header("keyward-key-id"),
            "authorization": header("authorization"),
        }))
    })
}

/// A certificate authority of the test's own, trusted by nobody else.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server configuration whose certificate, issued by this CA, names
    /// `host` only.
    fn server_config(&self, host: &str) -> ServerConfig {
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key)
            .unwrap()
    }
}

/// A TLS listener for `axum::serve`. A client that gives up the handshake
/// (it did not trust the certificate) is counted and never served.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    refused_handshakes: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, peer),
                Err(_) => {
                    self.refused_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The upstream app behind TLS with `config`: its port, and the count of
/// handshakes a client abandoned.
async fn start_tls_upstream(config: ServerConfig) -> (u16, Arc<AtomicUsize>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let refused_handshakes = Arc::new(AtomicUsize::new(0));
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        refused_handshakes: refused_handshakes.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, upstream_app()).await });
    (port, refused_handshakes)
}

const ROUTES: &str = r#"
[[route]]
method = "GET"
path = "/hello/{name}"
"#;

/// A database `keyward init` made and a routes file of [`ROUTES`], in a
/// directory of their own.
struct Deployment {
    dir: tempfile::TempDir,
    db: String,
    created: Value,
    routes: PathBuf,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
        let created = initialised(&db, &["init"], "owner@example.com");
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, ROUTES).unwrap();
        Self {
            dir,
            db,
            created,
            routes,
        }
    }

    fn account(&self) -> &str {
        self.created["account_id"].as_str().unwrap()
    }

    fn secret(&self) -> &str {
        self.created["primary_secret"].as_str().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_verifies_forwards_and_refuses() {
    let deployment = Deployment::new();
    let Deployment {
        db,
        created,
        routes,
        ..
    } = &deployment;
    let (account, secret) = (deployment.account(), deployment.secret());
    let routes = routes.to_str().unwrap();
    let upstream = start_upstream().await;

    let gateway = Serving::start_command(
        db,
        "info",
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--routes",
            routes,
            "--account",
            account,
            "--api-listen",
            "127.0.0.1:0",
            "--trusted-proxy",
            "10.0.0.0/8,192.0.2.1",
        ],
        "keyward API listening on ",
    );
    let proxied = gateway
        .address_logged("keyward gateway listening on ")
        .expect("the gateway's address is logged");
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{proxied}/hello/world"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/hello/world");
    assert_eq!(seen["key_id"], created["primary_site_id"]);
    assert_eq!(seen["authorization"], Value::Null);

    let refused = http
        .get(format!("{proxied}/hello/world"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let unrouted = http
        .get(format!("{proxied}/v1/workspaces"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        unrouted.status(),
        404,
        "the admin API is not behind the gateway"
    );
    let health = http
        .get(format!("{}/healthz", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "--api-listen serves the API");

    let log = gateway.stop();
    assert!(!log.contains(secret), "the secret reached the log");
}

/// `keyward proxy --upstream https://…`: the hop is TLS, and the upstream's
/// certificate must be issued by an authority the gateway trusts and name
/// the upstream's host, or nothing is forwarded (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_only_with_a_certificate_it_trusts() {
    let deployment = Deployment::new();
    let Deployment {
        dir,
        db,
        created,
        routes,
    } = &deployment;
    let (account, secret) = (deployment.account(), deployment.secret());
    let ca = TestCa::new("Keyward test CA");
    let stranger = TestCa::new("Someone else's CA");
    let (ca_file, stranger_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&stranger_file, stranger.pem()).unwrap();
    let (port, refused_handshakes) = start_tls_upstream(ca.server_config("localhost")).await;

    let gateway = |upstream: String, ca_file: Option<&Path>, system: Option<&Path>| {
        let mut command = keyward(db);
        command.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream]);
        command.args(["--routes", routes.to_str().unwrap(), "--account", account]);
        if let Some(ca_file) = ca_file {
            command.arg("--upstream-ca").arg(ca_file);
        }
        // The system's trust store, as rustls-native-certs reads it.
        if let Some(system) = system {
            command.env("SSL_CERT_FILE", system);
        }
        Serving::spawn(command, "info", "keyward gateway listening on ")
    };
    let get = |gateway: &Serving| {
        reqwest::Client::new()
            .get(format!("{}/hello/world", gateway.base))
            .bearer_auth(secret)
            .send()
    };

    // Trusting the CA that issued the upstream's certificate.
    let trusting = gateway(format!("https://localhost:{port}"), Some(&ca_file), None);
    let response = get(&trusting).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/hello/world");
    assert_eq!(seen["key_id"], created["primary_site_id"]);
    assert_eq!(seen["authorization"], Value::Null);
    assert_eq!(refused_handshakes.load(Ordering::SeqCst), 0);

    // The system's authorities (here: only a stranger's) do not vouch for
    // it; nor does a CA file of the wrong authority; nor does the right
    // authority for a host the certificate does not name.
    let untrusted = [
        gateway(
            format!("https://localhost:{port}"),
            None,
            Some(&stranger_file),
        ),
        gateway(
            format!("https://localhost:{port}"),
            Some(&stranger_file),
            None,
        ),
        gateway(format!("https://127.0.0.1:{port}"), Some(&ca_file), None),
    ];
    for (refusals, gateway) in (1..).zip(&untrusted) {
        let response = get(gateway).await.unwrap();
        assert_eq!(response.status(), 502, "{}", gateway.base);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "upstream_unavailable");
        assert_eq!(refused_handshakes.load(Ordering::SeqCst), refusals);
    }
    for gateway in untrusted {
        let log = gateway.stop();
        assert!(log.contains("upstream request failed"), "{log}");
        assert!(!log.contains(secret), "the secret reached the log");
    }
    let log = trusting.stop();
    assert!(!log.contains(secret), "the secret reached the log");
}

#[test]
fn bad_configuration_stops_the_gateway_at_start() {
    let deployment = Deployment::new();
    let Deployment {
        dir, db, routes, ..
    } = &deployment;
    let account = deployment.account();
    let good = routes;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[route]]\nmethod = \"get\"\npath = \"/x\"\n").unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "a certificate, honestly").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let no_ca: &[&str] = &[];
    for (upstream, routes, account, ca, says) in [
        ("http://127.0.0.1:9", bad, account, no_ca, "route 1, method"),
        (
            "http://127.0.0.1:9",
            "/nonexistent/routes.toml",
            account,
            no_ca,
            "--routes",
        ),
        (
            "http://127.0.0.1:9",
            good,
            "acct_typo",
            no_ca,
            "no account acct_typo",
        ),
        (
            "ftp://127.0.0.1:9",
            good,
            account,
            no_ca,
            "http:// or https://",
        ),
        (
            "http://127.0.0.1:9",
            good,
            account,
            &["--upstream-ca", not_pem],
            "--upstream-ca: the upstream is http://",
        ),
        (
            "https://127.0.0.1:9",
            good,
            account,
            &["--upstream-ca", "/nonexistent/ca.pem"],
            "--upstream-ca: reading /nonexistent/ca.pem",
        ),
        (
            "https://127.0.0.1:9",
            good,
            account,
            &["--upstream-ca", not_pem],
            "holds no PEM certificate",
        ),
        ("http://127.0.0.1:9", good, account, no_ca, "host bits set"),
    ] {
        let output = keyward(db)
            .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(["--routes", routes, "--account", account])
            .args(ca)
            // Only the last case's own mistake; valid for the others.
            .args([
                "--trusted-proxy",
                if says == "host bits set" {
                    "10.0.0.1/8"
                } else {
                    "10.0.0.0/8"
                },
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "started with {routes} {account} {upstream}"
        );
        assert!(stderr.contains(says), "{says:?} not in {stderr}");
    }
}
