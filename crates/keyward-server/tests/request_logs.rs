//! Request logs through the HTTP API, on both stores: every verification
//! outcome appears within the flush interval, filters and pages work, other
//! accounts see nothing, and logs outlive the key's workspace.

mod common;

use common::{TestServer, eventually};
use keyward_server::ServerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

on_both_stores!(
    outcomes_are_logged_in_batches_and_filterable,
    logs_are_scoped_by_account_and_survive_deletion,
    bad_filters_name_the_field,
    the_retention_purge_deletes_only_older_logs,
    large_batches_are_written_whole,
    a_full_log_buffer_still_records_last_use,
);

/// Waits until `path` lists exactly `count` logs (a generous deadline: the
/// buffer flushes every second).
async fn logs(s: &TestServer, path: &str, count: usize) -> Vec<Value> {
    eventually(Duration::from_secs(15), || async {
        let (status, body) = s.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let data = body["data"].as_array().unwrap().clone();
        (data.len() == count).then_some(data)
    })
    .await
}

async fn outcomes_are_logged_in_batches_and_filterable(s: TestServer) {
    s.catalog(&["customers:read", "orders:read", "orders:write"])
        .await;
    let (key, secret) = s
        .issue(json!({"name": "logged", "environment": "production",
                      "permissions": ["customers:read", "orders:read", "orders:write"]}))
        .await;
    let key_id = key["id"].as_str().unwrap();
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    assert_eq!(
        s.code(
            json!({"key": secret, "permissions": ["orders:write", "customers:read"],
                      "ip": "203.0.113.7"})
        )
        .await,
        "valid"
    );
    assert_eq!(
        s.code(json!({"key": secret, "environment": "staging"}))
            .await,
        "wrong_environment"
    );
    assert_eq!(s.code(json!({"key": "not-a-key"})).await, "malformed_key");

    let all = logs(&s, "/v1/logs", 3).await;
    // Newest first.
    assert_eq!(all[0]["code"], "malformed_key");
    assert_eq!(all[0]["key_id"], json!(null));
    assert_eq!(all[1]["code"], "wrong_environment");
    assert_eq!(all[1]["status"], 401);
    let valid = &all[2];
    assert_eq!(valid["code"], "valid");
    assert_eq!(valid["key_id"], key_id);
    assert_eq!(valid["workspace_id"], s.owner.workspace_id.as_str());
    assert_eq!(valid["environment"], "production");
    assert_eq!(valid["client_ip"], "203.0.113.7");
    // Asked for in any order, logged sorted: two of the key's three.
    assert_eq!(
        valid["permissions"],
        json!(["customers:read", "orders:write"])
    );
    assert!(valid["latency_us"].as_i64().unwrap() >= 0);
    assert!(valid["at"].is_string());

    let per_key = logs(&s, &format!("/v1/keys/{key_id}/logs"), 2).await;
    assert!(per_key.iter().all(|l| l["key_id"] == key_id));
    let only = logs(&s, "/v1/logs?code=wrong_environment", 1).await;
    assert_eq!(only[0]["code"], "wrong_environment");
    logs(&s, "/v1/logs?outcome=valid&environment=production", 1).await;
    let from = before
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    logs(&s, &format!("/v1/logs?from={from}"), 3).await;
    logs(&s, &format!("/v1/logs?to={from}"), 0).await;
    logs(
        &s,
        &format!("/v1/logs?workspace_id={}", s.owner.workspace_id),
        2,
    )
    .await;

    // Cursor pages, newest first, without overlap.
    let (_, first) = s.get("/v1/logs?limit=2").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = s.get(&format!("/v1/logs?limit=2&cursor={cursor}")).await;
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["data"][0]["code"], "valid");
    assert_eq!(second["next_cursor"], json!(null));
}

async fn logs_are_scoped_by_account_and_survive_deletion(s: TestServer) {
    let (status, ws) = s.post("/v1/workspaces", json!({"name": "Doomed"})).await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    let ws_id = ws["id"].as_str().unwrap();
    let (status, created) = s
        .post(
            &format!("/v1/workspaces/{ws_id}/keys"),
            json!({"name": "short-lived", "environment": "production"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key_id = created["key"]["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(s.code(json!({"key": secret})).await, "valid");
    let path = format!("/v1/keys/{key_id}/logs");
    logs(&s, &path, 1).await;

    // Another account sees none of it, not even through the key's id.
    let other = s.new_tenant().await;
    for listed in ["/v1/logs", path.as_str()] {
        let (status, body) = s.call(&other.token, Method::GET, listed, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"], json!([]), "{listed}");
    }

    let (status, body) = s
        .call(
            &s.owner.token,
            Method::DELETE,
            &format!("/v1/workspaces/{ws_id}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    // The key is gone at once (cache invalidated before the answer)…
    assert_eq!(s.code(json!({"key": secret})).await, "unknown_key");
    // …and its history stays, with the refusal appended.
    let kept = logs(&s, "/v1/logs", 2).await;
    assert_eq!(kept[0]["code"], "unknown_key");
    assert_eq!(kept[1]["key_id"], key_id);
    assert_eq!(logs(&s, &path, 1).await[0]["code"], "valid");
}

async fn bad_filters_name_the_field(s: TestServer) {
    for (query, field) in [
        ("code=nope", "code"),
        ("from=yesterday", "from"),
        ("to=2024-13-01T00:00:00Z", "to"),
        ("environment=Bad%20Env", "environment"),
        ("colour=red", "colour"),
    ] {
        let (status, problem) = s.get(&format!("/v1/logs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
}

async fn the_retention_purge_deletes_only_older_logs(s: TestServer) {
    let (_, secret) = s
        .issue(json!({"name": "purged", "environment": "production"}))
        .await;
    assert_eq!(s.code(json!({"key": secret})).await, "valid");
    let written = logs(&s, "/v1/logs", 1).await;
    let at = time::OffsetDateTime::parse(
        written[0]["at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let at_ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap();
    // The cut-off is exclusive: a log written at it is kept.
    assert_eq!(s.store.purge_request_logs(at_ms).await.unwrap(), 0);
    logs(&s, "/v1/logs", 1).await;
    assert_eq!(s.store.purge_request_logs(at_ms + 1).await.unwrap(), 1);
    logs(&s, "/v1/logs", 0).await;
}

/// A batch larger than one block (1,024 entries of one key, or here of no
/// key) lands whole, and the API's pages cover it.
async fn large_batches_are_written_whole(s: TestServer) {
    // Recent times: the server's retention purge would delete old ones.
    let now_ms = common::now_ms();
    let batch: Vec<_> = (0..1_100)
        .map(|n| keyward_store::NewRequestLog {
            account_id: s.owner.account_id.clone(),
            at: now_ms - n,
            key_id: None,
            workspace_id: None,
            environment: Some("production".into()),
            client_ip: None,
            permissions: vec![],
            code: "unknown_key".into(),
            latency_us: 3,
            method: None,
            path: None,
        })
        .collect();
    s.store
        .insert_request_logs(&batch.iter().collect())
        .await
        .unwrap();
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/logs?limit=100&cursor={c}"),
            None => "/v1/logs?limit=100".into(),
        };
        let (status, page) = s.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, 1_100);
}

/// With no room left in a node's log buffer, outcomes are dropped from the
/// request log (and counted), but every key's last use is still recorded:
/// last use is derived from the buffered outcomes, and a dropped one is
/// noted on the spot.
async fn a_full_log_buffer_still_records_last_use(s: TestServer) {
    let node = s
        .another_node(ServerConfig {
            log_buffer_capacity: 1,
            ..ServerConfig::default()
        })
        .await;
    let mut keys = Vec::new();
    for n in 0..4 {
        keys.push(
            s.issue(json!({"name": format!("busy {n}"), "environment": "production"}))
                .await,
        );
    }
    // Two worker threads, one entry each: at least two of the four are
    // dropped, unless a flush falls between the calls.
    for (_, secret) in &keys {
        let asks = json!({"key": secret, "ip": "203.0.113.9"});
        assert_eq!(s.code_on(&node.base, asks).await, "valid");
    }
    for (key, _) in &keys {
        let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
        eventually(Duration::from_secs(15), || async {
            let (status, shown) = s.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{shown}");
            (shown["last_used_ip"] == "203.0.113.9").then_some(())
        })
        .await;
    }
}
