//! Background jobs through the real HTTP API on both stores: bulk operations
//! run by the worker with progress and results, lifecycle rules respected,
//! and a job interrupted by a crash resumed rather than lost.

mod common;

use common::{TestServer, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

on_both_stores!(
    bulk_disable_runs_in_the_background,
    bulk_revoke_skips_protected_keys,
    an_interrupted_job_is_resumed,
    jobs_belong_to_their_account,
);

/// Polls a job until it has finished; returns it.
async fn finished(s: &TestServer, id: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let (_, job) = s.get(&format!("/v1/jobs/{id}")).await;
        matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
    })
    .await
}

async fn bulk_disable_runs_in_the_background(s: TestServer) {
    let mut secrets = Vec::new();
    for (i, env) in ["production", "production", "staging", "production"]
        .iter()
        .enumerate()
    {
        let (_, secret) = s
            .issue(json!({"name": format!("k{i}"), "environment": env}))
            .await;
        secrets.push(secret);
    }
    let body = json!({"kind": "disable_keys", "workspace_id": s.owner.workspace_id, "environment": "production"});
    let (status, job) = s.post("/v1/jobs", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "queued");
    let job = finished(&s, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // Our three production keys and the workspace's primary key (disabling
    // is reversible, so the last-ingest-key rule does not protect it).
    assert_eq!(job["result"]["matched"], 4);
    assert_eq!(job["result"]["changed"], 4);
    assert_eq!(job["progress"], json!({"done": 4, "total": 4}));
    assert!(job["finished_at"].is_string());

    for (i, secret) in secrets.iter().enumerate() {
        let expected = if i == 2 { "valid" } else { "key_inactive" };
        assert_eq!(s.code(json!({"key": secret})).await, expected, "key {i}");
    }
    let (_, list) = s.get("/v1/jobs").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

async fn bulk_revoke_skips_protected_keys(s: TestServer) {
    let (status, ws) = s.post("/v1/workspaces", json!({"name": "Shop"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let ws_id = ws["id"].as_str().unwrap();
    let (status, _) = s
        .post(
            &format!("/v1/workspaces/{ws_id}/keys"),
            json!({"name": "server", "environment": "production"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, job) = s
        .post(
            "/v1/jobs",
            json!({"kind": "revoke_keys", "workspace_id": ws_id}),
        )
        .await;
    let job = finished(&s, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (
            job["result"]["matched"].as_u64(),
            job["result"]["changed"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let skipped = job["result"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["key_id"], ws["primary_credentials"]["key"]["id"]);
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("last active ingest key"),
        "{skipped:?}"
    );
    let primary_secret = ws["primary_credentials"]["secret"].as_str().unwrap();
    assert_eq!(s.code(json!({"key": primary_secret})).await, "valid");

    let (status, problem) = s
        .post(
            "/v1/jobs",
            json!({"kind": "rotate_everything", "workspace_id": ws_id}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind"))
    );
    let (status, problem) = s
        .post(
            "/v1/jobs",
            json!({"kind": "revoke_keys", "workspace_id": "ws_nope"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("workspace_id"))
    );
}

async fn an_interrupted_job_is_resumed(s: TestServer) {
    let (_, secret) = s
        .issue(json!({"name": "victim", "environment": "production"}))
        .await;
    // A worker claimed this job and died: it is `running`, with a heartbeat
    // a minute old, as a crash leaves it.
    let stale = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 60_000;
    let params = json!({"workspace_id": s.owner.workspace_id}).to_string();
    let job_id = "job_01crashedcrashedcrashed00";
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(s.database_url())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, account_id, kind, params, status, attempts, created_by, created_at, started_at, heartbeat_at) \
         VALUES ($1, $2, 'disable_keys', $3, 'running', 1, NULL, $4, $4, $4)",
    )
    .bind(job_id)
    .bind(&s.owner.account_id)
    .bind(&params)
    .bind(stale)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::Connection::close(db).await.unwrap();

    let job = finished(&s, job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "resumed once");
    assert_eq!(
        job["result"]["changed"], 2,
        "the victim and the primary key"
    );
    assert_eq!(s.code(json!({"key": secret})).await, "key_inactive");
}

async fn jobs_belong_to_their_account(s: TestServer) {
    let (_, job) = s
        .post(
            "/v1/jobs",
            json!({"kind": "disable_keys", "workspace_id": s.owner.workspace_id}),
        )
        .await;
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let other = s.new_tenant().await;
    assert_eq!(
        s.call(&other.token, Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, theirs) = s.call(&other.token, Method::GET, "/v1/jobs", None).await;
    assert_eq!(theirs["data"], json!([]), "nor the deployment's own sweeps");
    let body = json!({"kind": "disable_keys", "workspace_id": s.owner.workspace_id});
    let (status, _) = s
        .call(&other.token, Method::POST, "/v1/jobs", Some(body))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
