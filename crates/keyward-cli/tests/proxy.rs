//! `keyward proxy`, the real binary: a gateway in front of an upstream,
//! started the way an operator would, refusing bad configuration at start.

mod common;

use axum::Router;
use axum::extract::Request;
use common::{Serving, initialised, keyward};
use serde_json::{Value, json};

/// An upstream answering with the identity headers it received and
/// whether a credential reached it.
async fn start_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(|request: Request| async move {
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
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

const ROUTES: &str = r#"
[[route]]
method = "GET"
path = "/hello/{name}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_verifies_forwards_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let created: Value = initialised(&db, &["init"], "owner@example.com");
    let account = created["account_id"].as_str().unwrap();
    let secret = created["primary_secret"].as_str().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, ROUTES).unwrap();
    let routes = routes.to_str().unwrap();
    let upstream = start_upstream().await;

    let gateway = Serving::start_command(
        &db,
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

#[test]
fn bad_configuration_stops_the_gateway_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let created: Value = initialised(&db, &["init"], "owner@example.com");
    let account = created["account_id"].as_str().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, ROUTES).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[route]]\nmethod = \"get\"\npath = \"/x\"\n").unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());

    for (upstream, routes, account, says) in [
        ("http://127.0.0.1:9", bad, account, "route 1, method"),
        (
            "http://127.0.0.1:9",
            "/nonexistent/routes.toml",
            account,
            "--routes",
        ),
        (
            "http://127.0.0.1:9",
            good,
            "acct_typo",
            "no account acct_typo",
        ),
        ("https://127.0.0.1:9", good, account, "http://"),
        ("http://127.0.0.1:9", good, account, "host bits set"),
    ] {
        let output = keyward(&db)
            .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(["--routes", routes, "--account", account])
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
