//! Keys issued by another system, moved in by their hashes: imported all or
//! none, verified by their own secrets on a deployment that accepts them,
//! refused as malformed (unread) on one that does not, and rotated into
//! Keyward's format.

mod common;

use base64::Engine;
use common::TestServer;
use keyward_core::KeyHash;
use keyward_server::ServerConfig;
use keyward_store::testing::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What another system's keys look like: not Keyward's format.
const LEGACY: &str = "sk_live_51HxLegacyKey0aB9cD8eF7gH6iJ5kL4mN3";
const OTHER_LEGACY: &str = "sk_live_51HxLegacyKey0zzzzzzzzzzzzzzzzzzzzz";

fn accepting() -> ServerConfig {
    ServerConfig {
        accept_imported_keys: true,
        ..ServerConfig::default()
    }
}

fn sha256_hex(secret: &str) -> String {
    KeyHash::of(secret).to_hex()
}

fn sha256_base64(secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(KeyHash::of(secret).as_bytes())
}

async fn import(s: &TestServer, body: Value) -> (StatusCode, Value) {
    s.post(
        &format!("/v1/workspaces/{}/keys/import", s.owner.workspace_id),
        body,
    )
    .await
}

async fn imported_keys_verify_by_their_own_secrets(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, accepting()).await else {
        return;
    };
    s.catalog(&["orders:read", "orders:write"]).await;
    // Presented before its import: remembered as unknown, which the
    // import must undo at once.
    assert_eq!(s.code(json!({"key": LEGACY})).await, "malformed_key");
    let (status, imported) = import(
        &s,
        json!({"keys": [
            {"hash": sha256_hex(LEGACY), "hint": "sk_live_51Hx", "name": "Acme (legacy)",
             "environment": "production", "permissions": ["orders:read"], "customer_id": "cus_acme"},
            {"hash": sha256_base64(OTHER_LEGACY), "name": "Globex (legacy)", "environment": "production"},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let keys = imported["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["hint"], "sk_live_51Hx…");
    assert_eq!(keys[1]["hint"], "imported…");
    assert!(
        !imported.to_string().contains(LEGACY),
        "nothing echoes a secret"
    );

    // Verified like any key: every check applies.
    let (verdict, _) = s
        .verify(json!({"key": LEGACY, "environment": "production", "permissions": ["orders:read"], "customer_id": "cus_acme"}))
        .await;
    assert_eq!(
        (verdict["code"].as_str(), &verdict["key"]["id"]),
        (Some("valid"), &keys[0]["id"])
    );
    assert_eq!(
        s.code(json!({"key": LEGACY, "permissions": ["orders:write"]}))
            .await,
        "insufficient_permissions"
    );
    assert_eq!(
        s.code(json!({"key": OTHER_LEGACY})).await,
        "valid",
        "a base64 hash"
    );
    // Through the gateway, as clients send it: recognised, then judged.
    let through_gateway = |key: &str| {
        reqwest::Client::new()
            .get(format!("{}/orders/1", s.gateway_base))
            .bearer_auth(key)
            .send()
    };
    let recognised = through_gateway(OTHER_LEGACY).await.unwrap();
    assert_eq!(recognised.status(), StatusCode::FORBIDDEN, "no orders:read");
    let unknown = through_gateway("sk_live_51HxSomethingElse000000000000")
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    // Anything else not in Keyward's format stays malformed, looked up or not.
    for other in [
        "sk_live_51HxSomethingElse000000000000",
        "short",
        "has a space in it, long enough",
        "",
    ] {
        assert_eq!(
            s.code(json!({"key": other})).await,
            "malformed_key",
            "{other:?}"
        );
    }
    // Another account does not reach them.
    let tenant = s.new_tenant().await;
    let (status, verdict) = s
        .call(
            &tenant.token,
            reqwest::Method::POST,
            "/v1/verify",
            Some(json!({"key": LEGACY})),
        )
        .await;
    assert_eq!(
        (status, verdict["code"].as_str()),
        (StatusCode::OK, Some("malformed_key"))
    );

    // Revoking takes effect at once; rotating moves a key to Keyward's
    // format, the imported secret working through the grace period.
    let legacy_b = format!("/v1/keys/{}", keys[1]["id"].as_str().unwrap());
    let (status, _) = s.post(&format!("{legacy_b}/revoke"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.code(json!({"key": OTHER_LEGACY})).await, "key_revoked");
    let legacy_a = format!("/v1/keys/{}", keys[0]["id"].as_str().unwrap());
    let (status, rotated) = s
        .post(
            &format!("{legacy_a}/rotate"),
            json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert!(rotated["secret"].as_str().unwrap().starts_with("kw_live_"));
    assert_eq!(rotated["key"]["rotation"]["old_hint"], "sk_live_51Hx…");
    assert_eq!(
        s.code(json!({"key": LEGACY, "customer_id": "cus_acme"}))
            .await,
        "valid"
    );
    assert_eq!(
        s.code(json!({"key": rotated["secret"], "customer_id": "cus_acme"}))
            .await,
        "valid"
    );

    // Audited as imports.
    let (_, events) = s.get("/v1/audit-events?action=key.imported").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 2);
}

async fn imports_check_every_item_and_create_all_or_none(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, accepting()).await else {
        return;
    };
    let good = |name: &str, secret: &str| json!({"hash": sha256_hex(secret), "name": name, "environment": "production"});
    let (status, _) = import(
        &s,
        json!({"keys": [good("taken", "sk_test_thisSecretIsTakenAlready01")]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let with = |name: &str, field: &str, value: Value| {
        let mut item = good(name, &format!("sk_test_{name:0>30}"));
        item[field] = value;
        item
    };
    let cases = [
        (json!({"keys": []}), "keys"),
        (
            json!({"keys": [good("a", "sk_test_aaaaaaaaaaaaaaaaaaaaaaaa"), with("b", "hash", json!("abc"))]}),
            "keys[1].hash",
        ),
        (
            json!({"keys": [with("c", "hash", json!(12))]}),
            "keys[0].hash",
        ),
        (
            json!({"keys": [{"name": "no hash", "environment": "production"}]}),
            "keys[0].hash",
        ),
        (
            json!({"keys": [with("d", "hint", json!("sk_live_51Hxy"))]}),
            "keys[0].hint",
        ),
        (
            json!({"keys": [with("e", "hint", json!("sk live"))]}),
            "keys[0].hint",
        ),
        (
            json!({"keys": [with("f", "kind", json!("publishable"))]}),
            "keys[0].kind",
        ),
        (
            json!({"keys": [with("g", "permissions", json!(["not in the catalog"]))]}),
            "keys[0].permissions[0]",
        ),
        (
            json!({"keys": [with("h", "surprise", json!(true))]}),
            "keys[0].surprise",
        ),
        (
            json!({"keys": [good("i", "sk_test_iiiiiiiiiiiiiiiiiiiiiiii"), good("taken", "sk_test_anotherSecretForTaken001")]}),
            "keys[1].name",
        ),
        (
            json!({"keys": [good("j", "sk_test_thisSecretIsTakenAlready01")]}),
            "keys[0].hash",
        ),
        (
            json!({"keys": [good("k", "sk_test_twiceInOneRequest0000000"), good("l", "sk_test_twiceInOneRequest0000000")]}),
            "keys[1].hash",
        ),
        (
            json!({"keys": [with("m", "environment", json!("qa"))]}),
            "keys[0].environment",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = import(&s, body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status} {problem}");
        assert_eq!(problem["field"].as_str(), Some(field), "{body}: {problem}");
    }
    let (_, keys) = s
        .get(&format!("/v1/workspaces/{}/keys", s.owner.workspace_id))
        .await;
    let names: Vec<&str> = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"taken"));
    for refused in ["a", "i", "k"] {
        assert!(
            !names.contains(&refused),
            "{refused} was created although its request was refused"
        );
    }
}

async fn a_deployment_that_does_not_accept_imports_refuses_them(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let (status, problem) = import(
        &s,
        json!({"keys": [{"hash": sha256_hex(LEGACY), "name": "legacy", "environment": "production"}]}),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("imports_disabled"))
    );
    // And a key imported through another node is not looked up here: a
    // credential in another format is malformed without a lookup (SPEC §2).
    let accepting_node = s.another_node(accepting()).await;
    let (status, _) = s
        .post_on(
            &accepting_node.base,
            &format!("/v1/workspaces/{}/keys/import", s.owner.workspace_id),
            json!({"keys": [{"hash": sha256_hex(LEGACY), "name": "legacy", "environment": "production"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(s.code(json!({"key": LEGACY})).await, "malformed_key");
    assert_eq!(
        s.code_on(&accepting_node.base, json!({"key": LEGACY}))
            .await,
        "valid"
    );
}

on_both_backends!(
    imported_keys_verify_by_their_own_secrets,
    imports_check_every_item_and_create_all_or_none,
    a_deployment_that_does_not_accept_imports_refuses_them,
);
