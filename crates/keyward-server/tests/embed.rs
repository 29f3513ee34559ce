//! Keyward embedded in a service of the platform's own, as a tower layer
//! (`keyward_server::embed`), on both stores: what an admitted route sees,
//! every denial answered by the layer as a problem without reaching the
//! route, changes through the API taking effect, and the verifications in
//! the request log like any other.

mod common;

use common::embedded_app::EmbeddedApp;
use common::{TestServer, eventually};
use keyward_core::KeyFormat;
use keyward_server::ServerConfig;
use keyward_server::embed::{EmbedOptions, Keyward};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

on_both_stores!(
    an_admitted_route_gets_the_key_without_its_credential,
    every_denial_is_a_problem_that_never_reaches_the_route,
    a_change_through_the_api_takes_effect_on_the_layer_at_once,
    a_standalone_verifier_logs_like_any_node_and_follows_the_store,
);

async fn get(
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// A request the layer must refuse: what it is, its credential header,
/// and the status and code of the answer.
type Denial = (
    &'static str,
    Option<(&'static str, String)>,
    StatusCode,
    &'static str,
);

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

async fn an_admitted_route_gets_the_key_without_its_credential(server: TestServer) {
    server.catalog(&["orders:read", "orders:write"]).await;
    let (key, secret) = server
        .issue(json!({
            "name": "Storefront", "environment": "production",
            "permissions": ["orders:read", "orders:write"], "customer_id": "cus_7",
            "meta": {"plan": "pro"}, "rate_limit": {"limit": 50, "window_seconds": 60},
        }))
        .await;
    let url = format!("{}/orders/42", server.app.base);
    let (status, headers, seen) = get(&url, &[("authorization", &bearer(&secret))]).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["key_id"], key["id"]);
    assert_eq!(seen["name"], "Storefront");
    assert_eq!(seen["workspace_id"], server.owner.workspace_id.as_str());
    assert_eq!(seen["environment"], "production");
    assert_eq!(seen["customer_id"], "cus_7");
    assert_eq!(seen["permissions"], json!(["orders:read", "orders:write"]));
    assert_eq!(seen["meta"], json!({"plan": "pro"}));
    assert_eq!(
        seen["credential_seen"], false,
        "the route saw the credential"
    );
    assert_eq!(headers["ratelimit-policy"], "\"key\";q=50;w=60");
    let current = headers["ratelimit"].to_str().unwrap();
    assert!(current.starts_with("\"key\";r=49;"), "{current}");

    let (status, _, seen) = get(
        &format!("{}/whoami", server.app.base),
        &[("x-api-key", &secret)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["credential_seen"], false);
    assert_eq!(server.app.hits(), 2);
}

async fn every_denial_is_a_problem_that_never_reaches_the_route(server: TestServer) {
    server.catalog(&["orders:read", "billing:read"]).await;
    let issue = |body: Value| server.issue(body);
    let (_, no_permission) = issue(json!({"name": "Billing only", "environment": "production",
                                           "permissions": ["billing:read"]}))
    .await;
    let (_, staging) = issue(json!({"name": "Staging", "environment": "staging",
                                     "permissions": ["orders:read"]}))
    .await;
    let (_, elsewhere) = issue(json!({"name": "Office only", "environment": "production",
                                       "permissions": ["orders:read"], "allowed_ips": ["10.0.0.0/8"]}))
    .await;
    let (_, limited) = issue(json!({"name": "Limited", "environment": "production",
                                     "permissions": ["orders:read"],
                                     "rate_limit": {"limit": 1, "window_seconds": 3600}}))
    .await;
    let tenant = server.new_tenant().await;
    let (_, foreign) = server
        .issue_as(
            &tenant,
            json!({"name": "Theirs", "environment": "production"}),
        )
        .await;
    let url = format!("{}/orders/1", server.app.base);
    let (status, _, _) = get(&url, &[("x-api-key", &limited)]).await;
    assert_eq!(status, StatusCode::OK);
    let hits = server.app.hits();

    let cases: [Denial; 7] = [
        ("no key", None, StatusCode::UNAUTHORIZED, "malformed_key"),
        (
            "garbage",
            Some(("authorization", bearer("kw_live_nonsense"))),
            StatusCode::UNAUTHORIZED,
            "malformed_key",
        ),
        (
            "another account's key",
            Some(("authorization", bearer(&foreign))),
            StatusCode::UNAUTHORIZED,
            "unknown_key",
        ),
        (
            "a staging key",
            Some(("x-api-key", staging)),
            StatusCode::UNAUTHORIZED,
            "wrong_environment",
        ),
        (
            "a missing permission",
            Some(("x-api-key", no_permission)),
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
        ),
        (
            "an address off the allowlist",
            Some(("x-api-key", elsewhere)),
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
        ),
        (
            "the rate limit",
            Some(("x-api-key", limited)),
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        ),
    ];
    for (case, headers, expected, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, response_headers, problem) = get(&url, &headers).await;
        assert_eq!(status, expected, "{case}: {problem}");
        assert_eq!(problem["code"], code, "{case}");
        assert_eq!(problem["status"], expected.as_u16(), "{case}");
        assert_eq!(
            response_headers["content-type"], "application/problem+json",
            "{case}"
        );
        if expected == StatusCode::UNAUTHORIZED {
            assert_eq!(response_headers["www-authenticate"], "Bearer", "{case}");
        }
        if expected == StatusCode::TOO_MANY_REQUESTS {
            assert!(response_headers.contains_key("retry-after"), "{case}");
        }
    }
    assert_eq!(
        server.app.hits(),
        hits,
        "a denied request reached the route"
    );
}

async fn a_change_through_the_api_takes_effect_on_the_layer_at_once(server: TestServer) {
    server.catalog(&["orders:read"]).await;
    let (key, secret) = server
        .issue(json!({"name": "Soon revoked", "environment": "production",
                      "permissions": ["orders:read"]}))
        .await;
    let url = format!("{}/orders/1", server.app.base);
    let credential = [("x-api-key", secret.as_str())];
    assert_eq!(get(&url, &credential).await.0, StatusCode::OK);

    let id = key["id"].as_str().unwrap();
    let (status, _) = server
        .patch(&format!("/v1/keys/{id}"), json!({"permissions": []}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, problem) = get(&url, &credential).await;
    assert_eq!(problem["code"], "insufficient_permissions");

    let (status, _) = server
        .post(&format!("/v1/keys/{id}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, problem) = get(&format!("{}/whoami", server.app.base), &credential).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["code"], "key_revoked");
}

async fn a_standalone_verifier_logs_like_any_node_and_follows_the_store(server: TestServer) {
    let missing = Keyward::start(
        server.store.clone(),
        KeyFormat::default(),
        ServerConfig::default(),
        EmbedOptions::for_account("acct_does_not_exist"),
    )
    .await;
    assert!(missing.is_err(), "an unknown account was accepted");

    server.catalog(&["orders:read"]).await;
    let (key, secret) = server
        .issue(json!({"name": "Embedded", "environment": "production",
                      "permissions": ["orders:read"]}))
        .await;
    let keyward = server.standalone_keyward().await;
    let app = EmbeddedApp::start(&keyward).await;
    let url = format!("{}/orders/9", app.base);
    let credential = [("authorization", bearer(&secret))];
    let credential: Vec<(&str, &str)> = credential.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(get(&url, &credential).await.0, StatusCode::OK);
    let id = key["id"].as_str().unwrap();

    // Only PostgreSQL carries one node's changes to another; SQLite is for
    // one process, where `Server::embedded` shares the server's cache.
    if server.database_url().starts_with("postgres") {
        let (status, _) = server
            .post(&format!("/v1/keys/{id}/revoke"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        eventually(Duration::from_secs(10), || async {
            let (_, _, problem) = get(&url, &credential).await;
            (problem["code"] == "key_revoked").then_some(())
        })
        .await;
    }

    // Stopping flushes what the verifier buffered.
    keyward.shutdown().await;
    let (status, logs) = server.get(&format!("/v1/keys/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK, "{logs}");
    let admitted = logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["code"] == "valid")
        .unwrap_or_else(|| panic!("no valid verification logged: {logs}"));
    assert_eq!(admitted["method"], "GET");
    assert_eq!(admitted["path"], "/orders/9");
    assert_eq!(admitted["client_ip"], "127.0.0.1");
    let (_, shown) = server.get(&format!("/v1/keys/{id}")).await;
    assert!(shown["last_used_at"].is_string(), "{shown}");
}
