//! Background jobs through the real HTTP API on both stores: bulk operations
//! run by the worker with progress and results, lifecycle rules respected,
//! and a job interrupted by a crash resumed rather than lost. Bulk rotation
//! hands its new secrets out encrypted to the caller's age key only.

mod common;

use common::{TestServer, eventually};
use keyward_server::cache::key_changes_overlap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

on_both_stores!(
    bulk_disable_runs_in_the_background,
    bulk_revoke_skips_protected_keys,
    an_interrupted_job_is_resumed,
    jobs_belong_to_their_account,
    bulk_rotate_hands_out_new_secrets_sealed_for_the_caller,
    bulk_rotate_without_grace_cuts_old_secrets_off,
    bulk_rotate_checks_its_input,
    an_interrupted_rotation_never_rotates_a_key_twice,
    logs_export_to_a_file_to_download,
    log_exports_check_their_input,
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
    let (mut ids, mut secrets) = (vec![s.owner.primary_key_id.clone()], Vec::new());
    for (i, env) in ["production", "production", "staging", "production"]
        .iter()
        .enumerate()
    {
        let (key, secret) = s
            .issue(json!({"name": format!("k{i}"), "environment": env}))
            .await;
        ids.push(key["id"].as_str().unwrap().to_owned());
        secrets.push(secret);
    }
    // The staging key, cached before the job, is not one it changes.
    assert_eq!(s.code(json!({"key": secrets[2]})).await, "valid");
    let misses = r#"keyward_cache_lookups_total{cache="key",result="miss"}"#;
    let warm = s.metric(misses).await;
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
    // The job dropped the keys it disabled, not the account's: the staging
    // key was still cached (unless its id shares a stripe with one of
    // theirs, about one chance in a thousand here).
    let staging = &ids[3];
    if !ids
        .iter()
        .any(|id| id != staging && key_changes_overlap(id, staging))
    {
        assert_eq!(
            s.metric(misses).await,
            warm + 3.0,
            "only the disabled keys were read"
        );
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

    // The list reads from either end: `order=desc` starts at the latest.
    let (_, later) = s
        .post(
            "/v1/jobs",
            json!({"kind": "disable_keys", "workspace_id": ws_id}),
        )
        .await;
    let ids = |list: &Value| -> Vec<String> {
        let data = list["data"].as_array().unwrap();
        data.iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let started = [job["id"].as_str().unwrap(), later["id"].as_str().unwrap()];
    let (_, oldest_first) = s.get("/v1/jobs").await;
    assert_eq!(ids(&oldest_first), started);
    let (_, newest) = s.get("/v1/jobs?order=desc&limit=1").await;
    assert_eq!(ids(&newest), [started[1]]);
    let cursor = newest["next_cursor"].as_str().unwrap();
    let (_, next) = s
        .get(&format!("/v1/jobs?order=desc&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(
        (ids(&next), &next["next_cursor"]),
        (vec![started[0].to_owned()], &Value::Null)
    );
    let (status, problem) = s.get("/v1/jobs?order=latest").await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("order"))
    );

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
    let db = running_job(&s, job_id, "disable_keys", &params, stale).await;
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

/// The new secrets of a rotation job, decrypted with `identity`: key id →
/// (its entry, the secret).
async fn opened_secrets(
    s: &TestServer,
    job_id: &str,
    identity: &age::x25519::Identity,
) -> BTreeMap<String, (Value, String)> {
    let (status, page) = s.get(&format!("/v1/jobs/{job_id}/secrets")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut opened = BTreeMap::new();
    for entry in page["data"].as_array().unwrap() {
        let sealed = entry["ciphertext"].as_str().unwrap();
        assert!(
            sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
            "{sealed}"
        );
        let secret = age::decrypt(identity, sealed.as_bytes()).expect("sealed for us");
        let secret = String::from_utf8(secret).unwrap();
        opened.insert(
            entry["key_id"].as_str().unwrap().to_owned(),
            (entry.clone(), secret),
        );
    }
    opened
}

/// Every stored text a secret could leak into: jobs (params, result, error),
/// the job's sealed secrets, audit events, and the keys themselves.
async fn stored_text(s: &TestServer) -> String {
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(s.database_url())
        .await
        .unwrap();
    let mut text = String::new();
    for query in [
        "SELECT id || params || COALESCE(result, '') || COALESCE(error, '') FROM jobs",
        "SELECT job_id || key_id || key_name || hint || ciphertext FROM job_secrets",
        "SELECT action || COALESCE(before_state, '') || COALESCE(after_state, '') FROM audit_events",
        "SELECT hash || hint || COALESCE(previous_hash, '') || COALESCE(public_value, '') FROM api_keys",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(&mut db).await.unwrap();
        assert!(!rows.is_empty(), "{query}");
        text.extend(rows);
    }
    sqlx::Connection::close(db).await.unwrap();
    text
}

async fn bulk_rotate_hands_out_new_secrets_sealed_for_the_caller(s: TestServer) {
    let identity = age::x25519::Identity::generate();
    let mut issued = Vec::new();
    for (name, env) in [
        ("a", "production"),
        ("b", "production"),
        ("c", "staging"),
        ("d", "production"),
    ] {
        issued.push(
            s.issue(json!({"name": name, "environment": env, "kind": "secret"}))
                .await,
        );
    }
    let id = |i: usize| issued[i].0["id"].as_str().unwrap().to_owned();
    let (status, revoked) = s
        .post(&format!("/v1/keys/{}/revoke", id(3)), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");

    let body = json!({
        "kind": "rotate_keys", "workspace_id": s.owner.workspace_id, "environment": "production",
        "grace_seconds": 3600, "recipient": identity.to_public().to_string(),
    });
    let (status, job) = s.post("/v1/jobs", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["params"]["grace_seconds"], 3600);
    let job_id = job["id"].as_str().unwrap().to_owned();
    let job = finished(&s, &job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // a, b, the revoked d and the workspace's primary ingest key.
    assert_eq!(job["result"]["matched"], 4, "{job}");
    assert_eq!(job["result"]["rotated"], 3, "{job}");
    assert_eq!(job["progress"], json!({"done": 4, "total": 4}));
    let skipped = job["result"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["key_id"], id(3).as_str());
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("revoked"),
        "{skipped:?}"
    );

    let opened = opened_secrets(&s, &job_id, &identity).await;
    let rotated: Vec<&str> = opened.keys().map(String::as_str).collect();
    let mut expected = vec![id(0), id(1), s.owner.primary_key_id.clone()];
    expected.sort();
    assert_eq!(rotated, expected);
    for (key_id, (entry, secret)) in &opened {
        let (verdict, _) = s.verify(json!({"key": secret})).await;
        assert_eq!(verdict["code"], "valid", "the new secret of {key_id}");
        assert_eq!(verdict["key"]["id"], key_id.as_str());
        let (_, key) = s.get(&format!("/v1/keys/{key_id}")).await;
        assert_eq!(key["hint"], entry["hint"], "{key}");
        assert!(entry["old_secret_expires_at"].is_string(), "{entry}");
        assert!(
            age::decrypt(
                &age::x25519::Identity::generate(),
                entry["ciphertext"].as_str().unwrap().as_bytes()
            )
            .is_err(),
            "only the recipient can open it"
        );
    }
    // The old secrets verify through the grace period; keys outside the
    // filter, and the revoked one, are as they were.
    for i in [0, 1] {
        assert_eq!(
            s.code(json!({"key": issued[i].1})).await,
            "valid",
            "old {i}"
        );
    }
    assert_eq!(s.code(json!({"key": issued[2].1})).await, "valid");
    let (_, staging) = s.get(&format!("/v1/keys/{}", id(2))).await;
    assert_eq!(staging["hint"], issued[2].0["hint"]);
    assert_eq!(s.code(json!({"key": issued[3].1})).await, "key_revoked");

    // Each rotation was audited like a single one, naming the job.
    let (_, events) = s
        .get(&format!(
            "/v1/audit-events?action=key.rotated&object_id={}",
            id(0)
        ))
        .await;
    let events = events["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["after"]["job_id"], job_id.as_str());

    // No new secret in the clear anywhere: not in what the API shows, not
    // in any stored row.
    let (_, shown_job) = s.get(&format!("/v1/jobs/{job_id}")).await;
    let (_, shown_secrets) = s.get(&format!("/v1/jobs/{job_id}/secrets")).await;
    let (_, audit) = s.get("/v1/audit-events?limit=100").await;
    let shown = format!("{shown_job}{shown_secrets}{audit}");
    let stored = stored_text(&s).await;
    for (key_id, (_, secret)) in &opened {
        assert!(!shown.contains(secret.as_str()), "{key_id}'s secret shown");
        assert!(
            !stored.contains(secret.as_str()),
            "{key_id}'s secret stored"
        );
    }
}

async fn bulk_rotate_without_grace_cuts_old_secrets_off(s: TestServer) {
    let identity = age::x25519::Identity::generate();
    let (key, old) = s
        .issue(json!({"name": "server", "environment": "staging"}))
        .await;
    // Verified once, so the verdict is cached: the job must still end it.
    assert_eq!(s.code(json!({"key": old})).await, "valid");
    let body = json!({
        "kind": "rotate_keys", "workspace_id": s.owner.workspace_id, "environment": "staging",
        "grace_seconds": 0, "recipient": identity.to_public().to_string(),
    });
    let (_, job) = s.post("/v1/jobs", body).await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    let job = finished(&s, &job_id).await;
    assert_eq!(
        (job["status"].as_str(), job["result"]["rotated"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{job}"
    );
    assert_ne!(s.code(json!({"key": old})).await, "valid");
    let opened = opened_secrets(&s, &job_id, &identity).await;
    let (_, new) = &opened[key["id"].as_str().unwrap()];
    assert_eq!(s.code(json!({"key": new})).await, "valid");
}

async fn bulk_rotate_checks_its_input(s: TestServer) {
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let ws = s.owner.workspace_id.as_str();
    let server = &s;
    let refused = |body: Value| async move {
        let (status, problem) = server.post("/v1/jobs", body).await;
        (status, problem["field"].as_str().map(str::to_owned))
    };
    let bad = |field: &str| (StatusCode::BAD_REQUEST, Some(field.to_owned()));
    assert_eq!(
        refused(json!({"kind": "rotate_keys", "workspace_id": ws})).await,
        bad("recipient")
    );
    for wrong in ["", "age1nope", "not a key", "AGE-SECRET-KEY-1QQQQ"] {
        assert_eq!(
            refused(json!({"kind": "rotate_keys", "workspace_id": ws, "recipient": wrong})).await,
            bad("recipient"),
            "{wrong:?}"
        );
    }
    let rotate = |grace: Value| json!({"kind": "rotate_keys", "workspace_id": ws, "recipient": recipient, "grace_seconds": grace});
    assert_eq!(refused(rotate(json!(604_801))).await, bad("grace_seconds"));
    assert_eq!(refused(rotate(json!(-1))).await, bad("grace_seconds"));
    assert_eq!(
        refused(json!({"kind": "disable_keys", "workspace_id": ws, "recipient": recipient})).await,
        bad("recipient")
    );
    assert_eq!(
        refused(json!({"kind": "revoke_keys", "workspace_id": ws, "grace_seconds": 60})).await,
        bad("grace_seconds")
    );
    let (_, jobs) = s.get("/v1/jobs").await;
    assert_eq!(jobs["data"], json!([]), "nothing was queued");

    // The default grace period is a day.
    let (status, job) = s
        .post(
            "/v1/jobs",
            json!({"kind": "rotate_keys", "workspace_id": ws, "recipient": recipient}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["params"]["grace_seconds"], 86_400);
    let job_id = job["id"].as_str().unwrap();

    // Another account's workspace and job are not found.
    let other = s.new_tenant().await;
    let body = json!({"kind": "rotate_keys", "workspace_id": ws, "recipient": recipient});
    let (status, problem) = s
        .call(&other.token, Method::POST, "/v1/jobs", Some(body))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("workspace_id"))
    );
    let path = format!("/v1/jobs/{job_id}/secrets");
    assert_eq!(
        s.call(&other.token, Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/jobs/job_nope/secrets").await.0,
        StatusCode::NOT_FOUND
    );
}

/// Writes a job as a worker that claimed it and died leaves it: `running`,
/// last heartbeat at `heartbeat_ms`. Returns the open connection.
async fn running_job(
    s: &TestServer,
    job_id: &str,
    kind: &str,
    params: &str,
    heartbeat_ms: i64,
) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(s.database_url())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, account_id, kind, params, status, attempts, created_by, created_at, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, $4, 'running', 1, NULL, $5, $5, $5)",
    )
    .bind(job_id)
    .bind(&s.owner.account_id)
    .bind(kind)
    .bind(params)
    .bind(heartbeat_ms)
    .execute(&mut db)
    .await
    .unwrap();
    db
}

async fn an_interrupted_rotation_never_rotates_a_key_twice(s: TestServer) {
    use rand_core::TryRngCore;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let (victim, original) = s
        .issue(json!({"name": "victim", "environment": "staging"}))
        .await;
    let (_, bystander_old) = s
        .issue(json!({"name": "bystander", "environment": "staging"}))
        .await;
    let victim_id = victim["id"].as_str().unwrap().to_owned();

    // A worker claimed this job, rotated the victim — the rotation and its
    // sealed secret committed together — and died before the next key.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let params = json!({
        "workspace_id": s.owner.workspace_id, "environment": "staging",
        "grace_seconds": 3600, "recipient": recipient.to_string(),
    })
    .to_string();
    let job_id = "job_01rotatorcrashedhalfway000";
    let mut db = running_job(&s, job_id, "rotate_keys", &params, now).await;
    let first = keyward_core::KeyFormat::default().generate(
        &keyward_core::EnvTag::parse("stg").unwrap(),
        &mut rand_core::OsRng.unwrap_err(),
    );
    let rotation = keyward_store::JobKeyReplacement {
        job_id: job_id.into(),
        replacement: keyward_store::KeyReplacement {
            key_id: victim_id.clone(),
            hash_hex: first.hash().to_hex(),
            hint: first.hint(),
            public_value: None,
            grace_ms: 3_600_000,
        },
        ciphertext: age::encrypt_and_armor(&recipient, first.expose().as_bytes()).unwrap(),
    };
    let worker = keyward_store::Actor {
        member_id: None,
        token_id: None,
        ip: None,
    };
    s.store
        .rotate_key_for_job(&s.owner.account_id, &worker, rotation)
        .await
        .unwrap();
    // Its heartbeat stops: a minute later the job is stale.
    sqlx::query("UPDATE jobs SET heartbeat_at = $1 WHERE id = $2")
        .bind(now - 60_000)
        .bind(job_id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::Connection::close(db).await.unwrap();

    let job = finished(&s, job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "resumed once");
    assert_eq!(job["result"]["matched"], 2, "{job}");
    assert_eq!(job["result"]["rotated"], 2, "{job}");
    assert_eq!(job["result"]["skipped"], json!([]), "{job}");

    // The victim was rotated once: the secret from before the crash is its
    // secret, and the original still verifies through the grace period (a
    // second rotation would have forgotten it at once).
    let opened = opened_secrets(&s, job_id, &identity).await;
    assert_eq!(opened.len(), 2);
    let (_, sealed_before_crash) = &opened[&victim_id];
    assert_eq!(sealed_before_crash.as_str(), first.expose());
    assert_eq!(s.code(json!({"key": first.expose()})).await, "valid");
    assert_eq!(s.code(json!({"key": original})).await, "valid");
    let (_, events) = s
        .get(&format!(
            "/v1/audit-events?action=key.rotated&object_id={victim_id}"
        ))
        .await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");

    // The rest of the job ran after the resume.
    for (key_id, (_, secret)) in opened.iter().filter(|(id, _)| **id != victim_id) {
        assert_eq!(s.code(json!({"key": secret})).await, "valid", "{key_id}");
    }
    assert_eq!(s.code(json!({"key": bystander_old})).await, "valid");
}

/// Downloads a finished export as its owner: the status, the headers that
/// matter, and the file decompressed.
async fn download(s: &TestServer, token: &str, id: &str) -> (StatusCode, String, String) {
    let response = s
        .send(
            token,
            Method::GET,
            &format!("/v1/jobs/{id}/export"),
            None,
            &[],
        )
        .await;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let described = format!(
        "{}; {}",
        header("content-type"),
        header("content-disposition")
    );
    let bytes = response.bytes().await.unwrap();
    if status != StatusCode::OK {
        return (
            status,
            described,
            String::from_utf8_lossy(&bytes).into_owned(),
        );
    }
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes.as_ref())
        .read_to_string(&mut text)
        .expect("one gzip file");
    (status, described, text)
}

async fn logs_export_to_a_file_to_download(s: TestServer) {
    let (key, secret) = s
        .issue(json!({"name": "exported", "environment": "production"}))
        .await;
    assert_eq!(s.code(json!({"key": secret})).await, "valid");
    assert_eq!(
        s.code(json!({"key": secret, "environment": "staging"}))
            .await,
        "wrong_environment"
    );
    // Enough rows of another key for a file of several parts.
    let now_ms = common::now_ms();
    let bulk: Vec<_> = (0..8_000)
        .map(|n| keyward_store::NewRequestLog {
            account_id: s.owner.account_id.clone(),
            at: now_ms - 60_000 - n,
            key_id: Some("key_elsewhere".into()),
            workspace_id: Some(s.owner.workspace_id.clone()),
            environment: Some("production".into()),
            client_ip: "198.51.100.9".parse().ok(),
            permissions: vec!["orders:read".into(), "orders:write".into()],
            code: "rate_limited".into(),
            latency_us: 7,
            method: Some("GET".into()),
            path: Some("/orders/\"a,b\"".into()),
        })
        .collect();
    s.store
        .insert_request_logs(&bulk.iter().collect())
        .await
        .unwrap();
    let key_id = key["id"].as_str().unwrap();
    let listed = eventually(Duration::from_secs(15), || async {
        let (_, page) = s.get(&format!("/v1/keys/{key_id}/logs")).await;
        let data = page["data"].as_array().unwrap().clone();
        (data.len() == 2).then_some(data)
    })
    .await;

    // The whole account as NDJSON: every row, newest first, in parts.
    let (status, job) = s
        .post(
            "/v1/jobs",
            json!({"kind": "export_logs", "format": "ndjson"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = finished(&s, id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["rows"], 8_002, "{job}");
    assert!(job["result"]["parts"].as_u64().unwrap() >= 2, "{job}");
    let (status, described, file) = download(&s, &s.owner.token, id).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(
        described,
        format!("application/gzip; attachment; filename=\"keyward-logs-{id}.ndjson.gz\"")
    );
    let rows: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 8_002);
    assert_eq!(
        rows[..2],
        listed[..],
        "the same rows as the list, newest first"
    );
    assert_eq!(rows[2]["path"], "/orders/\"a,b\"");
    assert!(
        rows.windows(2)
            .all(|w| w[0]["id"].as_str() > w[1]["id"].as_str())
    );
    assert!(!file.contains(&secret));

    // One key's, one outcome, as CSV: the list's filters, the same rows.
    let (_, job) = s
        .post(
            "/v1/jobs",
            json!({"kind": "export_logs", "key_id": key_id, "code": "wrong_environment"}),
        )
        .await;
    let csv_id = job["id"].as_str().unwrap();
    assert_eq!(finished(&s, csv_id).await["result"]["rows"], 1);
    let (_, described, file) = download(&s, &s.owner.token, csv_id).await;
    assert!(described.ends_with(".csv.gz\""), "{described}");
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(
        lines[0],
        "id,at,key_id,workspace_id,environment,client_ip,permissions,code,status,latency_us,method,path"
    );
    assert_eq!(lines.len(), 2, "{file}");
    assert!(
        lines[1].starts_with(listed[0]["id"].as_str().unwrap()),
        "{file}"
    );
    assert!(lines[1].contains(",wrong_environment,401,"), "{file}");

    // Each download is audited, with who fetched it.
    let (_, audited) = s
        .get("/v1/audit-events?action=job.export_downloaded&order=desc")
        .await;
    let audited = audited["data"].as_array().unwrap();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0]["object_id"], csv_id);
    assert_eq!(audited[1]["object_id"], id);
    assert!(audited[0]["actor"]["token_id"].is_string());

    // Another account cannot reach either; other jobs have no file.
    let other = s.new_tenant().await;
    let (status, _, _) = download(&s, &other.token, id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = s
        .call(
            &other.token,
            Method::POST,
            "/v1/jobs",
            Some(json!({"kind": "export_logs"})),
        )
        .await;
    let theirs = theirs["id"].as_str().unwrap();
    let (status, _) = s.get(&format!("/v1/jobs/{theirs}/export")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, disable) = s
        .post("/v1/jobs", json!({"kind": "disable_keys", "workspace_id": s.owner.workspace_id, "environment": "staging"}))
        .await;
    let disable = disable["id"].as_str().unwrap();
    finished(&s, disable).await;
    let (status, problem) = s.get(&format!("/v1/jobs/{disable}/export")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_an_export"))
    );

    // A week on, the purge deletes the file; the download says so.
    s.store.purge_job_exports(i64::MAX).await.unwrap();
    let (status, problem) = s.get(&format!("/v1/jobs/{id}/export")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::GONE, Some("export_expired"))
    );
}

async fn log_exports_check_their_input(s: TestServer) {
    let refused = [
        (json!({"kind": "export_logs", "format": "xml"}), "format"),
        (json!({"kind": "export_logs", "from": "yesterday"}), "from"),
        (json!({"kind": "export_logs", "code": "fine"}), "code"),
        (
            json!({"kind": "export_logs", "environment": "Prod uction"}),
            "environment",
        ),
        (json!({"kind": "export_logs", "status": "active"}), "status"),
        (
            json!({"kind": "export_logs", "recipient": "age1x"}),
            "recipient",
        ),
        (json!({"kind": "disable_keys"}), "workspace_id"),
        (
            json!({"kind": "revoke_keys", "workspace_id": s.owner.workspace_id, "format": "csv"}),
            "format",
        ),
        (
            json!({"kind": "disable_keys", "workspace_id": s.owner.workspace_id, "key_id": "key_1"}),
            "key_id",
        ),
    ];
    for (body, field) in refused {
        let (status, problem) = s.post("/v1/jobs", body.clone()).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{body}: {problem}"
        );
    }
    let (status, problem) = s
        .post(
            "/v1/jobs",
            json!({"kind": "export_logs", "workspace_id": "ws_nope"}),
        )
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("workspace_id"))
    );
    let (_, jobs) = s.get("/v1/jobs").await;
    assert_eq!(jobs["data"], json!([]), "nothing was started");
}
