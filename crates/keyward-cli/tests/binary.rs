//! The real `keyward` binary, as a new user runs it: init, serve on a free
//! port, issue and verify a key over HTTP, stop — and the secrets it handed
//! out never appear in its logs, even at trace level.

mod common;

use common::{BIN, Serving, init, initialised, keyward};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_serve_issue_verify_and_keep_secrets_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());

    let created = initialised(&db, &["init"], "owner@example.com");
    for field in [
        "account_id",
        "user_id",
        "workspace_id",
        "management_token",
        "primary_site_id",
        "primary_secret",
    ] {
        assert!(created[field].is_string(), "{field} missing from {created}");
    }
    let token = created["management_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kw_mgmt_"));

    let again = init(&db, &["init"], "someone@example.com");
    assert!(!again.status.success(), "a second init must refuse");
    assert!(String::from_utf8_lossy(&again.stderr).contains("account create"));

    let tenant = initialised(&db, &["account", "create"], "other@example.com");
    assert_ne!(tenant["account_id"], created["account_id"]);

    let server = Serving::start(&db, "trace");
    let http = reqwest::Client::new();
    let keys = format!(
        "{}/v1/workspaces/{}/keys",
        server.base,
        created["workspace_id"].as_str().unwrap()
    );
    let response = http
        .post(&keys)
        .bearer_auth(&token)
        .json(&json!({"name": "Main Website Integration", "environment": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let issued: Value = response.json().await.unwrap();
    let secret = issued["secret"].as_str().unwrap().to_owned();

    let verdict: Value = http
        .post(format!("{}/v1/verify", server.base))
        .bearer_auth(&token)
        .json(&json!({"key": secret, "environment": "production"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["code"], "valid");
    let other_token = tenant["management_token"].as_str().unwrap();
    let verdict: Value = http
        .post(format!("{}/v1/verify", server.base))
        .bearer_auth(other_token)
        .json(&json!({"authorization": format!("Bearer {secret}")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verdict["code"], "unknown_key", "tenants are isolated");

    let log = server.stop();
    assert!(log.contains("/v1/verify"), "trace logging was on: {log}");
    for secret in [&secret, &token, other_token] {
        let body = &secret[secret.len() - 20..];
        assert!(!log.contains(body), "a secret leaked into the log");
    }

    // Migrations are idempotent and the data survived the restart.
    let migrate = keyward(&db).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_first_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    for (subcommand, email) in [
        (&["init"][..], "owner@example.com"),
        (&["account", "create"], "other@example.com"),
    ] {
        let output = init(&db, subcommand, email);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let verify = || keyward(&db).args(["audit", "verify"]).output().unwrap();
    let intact = verify();
    let stdout = String::from_utf8_lossy(&intact.stdout).into_owned();
    assert!(
        intact.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert_eq!(stdout.matches("chain intact").count(), 2, "{stdout}");

    // Change the first event of one account behind Keyward's back.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let (id, account): (String, String) =
        sqlx::query_as("SELECT id, account_id FROM audit_events ORDER BY account_id, seq LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    sqlx::query("UPDATE audit_events SET actor_ip = '198.51.100.1' WHERE id = $1")
        .bind(&id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();

    let tampered = verify();
    let stdout = String::from_utf8_lossy(&tampered.stdout).into_owned();
    assert!(
        !tampered.status.success(),
        "a broken chain must fail: {stdout}"
    );
    assert!(
        stdout.contains(&format!("{account}: chain broken at event #1 ({id})")),
        "{stdout}"
    );
    assert_eq!(stdout.matches("chain intact").count(), 1, "{stdout}");
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("1 of 2 audit chains"));

    // One account at a time; an unknown one is an error, not a pass.
    let other = keyward(&db)
        .args(["audit", "verify", "--account", "acct_nope"])
        .output()
        .unwrap();
    assert!(!other.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_head_shows_the_newest_events_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let created: Value =
        serde_json::from_slice(&init(&db, &["init"], "owner@example.com").stdout).unwrap();
    let account = created["account_id"].as_str().unwrap();
    let verify = |extra: &[&str]| {
        keyward(&db)
            .args(["audit", "verify", "--account", account])
            .args(extra)
            .output()
            .unwrap()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    // The head, as printed: `SEQ:HASH`.
    let first = verify(&[]);
    let stdout = text(&first.stdout);
    let head = stdout
        .split("head ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no head in {stdout}"))
        .to_owned();
    let (seq, hash) = head.split_once(':').unwrap();
    assert!(
        seq.parse::<i64>().unwrap() >= 2 && hash.len() == 64,
        "{head}"
    );
    let held = verify(&["--expect-head", &head]);
    assert!(held.status.success(), "{}", text(&held.stderr));
    assert!(text(&held.stdout).contains("unchanged"));

    // A head with another hash is a rewritten chain.
    let other_hash = format!("{seq}:{}", "0".repeat(64));
    let rewritten = verify(&["--expect-head", &other_hash]);
    assert!(!rewritten.status.success());
    assert!(
        text(&rewritten.stderr).contains("rewritten"),
        "{}",
        text(&rewritten.stderr)
    );

    // Remove the newest event behind Keyward's back: the chain still holds,
    // the recorded head does not.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE account_id = $1 AND seq = $2")
        .bind(account)
        .bind(seq.parse::<i64>().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    let plain = verify(&[]);
    assert!(plain.status.success(), "the chain alone cannot tell");
    let cut = verify(&["--expect-head", &head]);
    assert!(!cut.status.success());
    let said = text(&cut.stderr);
    assert!(said.contains(&format!("event #{seq} is gone")), "{said}");

    // Malformed heads and a head without an account are refused up front.
    for bad in [
        "3",
        "x:abc",
        &format!("0:{hash}"),
        &format!("{seq}:{}", "G".repeat(64)),
    ] {
        let refused = verify(&["--expect-head", bad]);
        assert!(!refused.status.success());
        assert!(text(&refused.stderr).contains("--expect-head"), "{bad}");
    }
    let unscoped = keyward(&db)
        .args(["audit", "verify", "--expect-head", &head])
        .output()
        .unwrap();
    assert!(!unscoped.status.success());
    assert!(text(&unscoped.stderr).contains("--account"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_verify_listener_needs_no_token_and_a_real_account() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let created: Value =
        serde_json::from_slice(&init(&db, &["init"], "owner@example.com").stdout).unwrap();
    let account = created["account_id"].as_str().unwrap();

    let typo = keyward(&db)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--verify-listen",
            "127.0.0.1:0",
            "--verify-account",
            "acct_typo",
        ])
        .output()
        .unwrap();
    assert!(!typo.status.success(), "an unknown account must stop serve");
    assert!(String::from_utf8_lossy(&typo.stderr).contains("no account acct_typo"));
    let alone = keyward(&db)
        .args(["serve", "--verify-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!alone.status.success(), "--verify-listen needs an account");
    assert!(String::from_utf8_lossy(&alone.stderr).contains("--verify-account"));

    let server = Serving::start_with(
        &db,
        "info",
        &[
            "--verify-listen",
            "127.0.0.1:0",
            "--verify-account",
            account,
        ],
    );
    let private = server
        .address_logged("private verify listener on ")
        .expect("the private listener's address is logged");
    let http = reqwest::Client::new();
    let verify = |base: String| {
        http.post(format!("{base}/v1/verify"))
            .json(&json!({"key": created["primary_secret"]}))
            .send()
    };
    let response = verify(private).await.unwrap();
    assert_eq!(response.status(), 200);
    let verdict: Value = response.json().await.unwrap();
    assert_eq!(verdict["code"], "valid", "{verdict}");
    assert_eq!(verdict["key"]["id"], created["primary_site_id"]);
    let response = verify(server.base.clone()).await.unwrap();
    assert_eq!(
        response.status(),
        401,
        "the API listener still wants a token"
    );

    let log = server.stop();
    assert!(!log.contains(created["primary_secret"].as_str().unwrap()));
}

#[test]
fn help_names_every_command() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let commands = [
        "serve",
        "proxy",
        "init",
        "account",
        "migrate",
        "audit",
        "keys",
        "workspaces",
        "permissions",
        "tokens",
        "allowlist",
        "members",
        "jobs",
        "scan",
    ];
    for command in commands {
        assert!(help.contains(command), "{command} missing from --help");
    }
}

#[test]
fn init_without_a_password_explains_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let output = keyward(&db)
        .args(["init", "--email", "a@example.com"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--password-stdin"));
}
