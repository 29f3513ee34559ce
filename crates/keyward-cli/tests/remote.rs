//! The `keys`, `workspaces`, `tokens`, `jobs` and `audit events` commands
//! of the real binary against a real `keyward serve`: a key's whole life
//! from the command line, a service's own token from creation to
//! revocation, bulk jobs and the audit log newest first, the API's
//! refusals read back as sentences naming the field, another account's
//! objects out of reach, no secret where it should not be, and GitHub's
//! secret scanning alerts reaching `keyward serve --github-secret-scanning`.

mod common;

use common::{BIN, Serving, initialised, run_with_stdin};
use serde_json::{Value, json};
use std::process::{Command, Output, Stdio};

struct Cli {
    api_url: String,
    token: String,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("KEYWARD_API_URL", &self.api_url)
            .env("KEYWARD_TOKEN", &self.token)
            .env_remove("KEYWARD_TOKEN_FILE")
            .env_remove("KEYWARD_WORKSPACE")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        run_with_stdin(self.command(args), input)
    }

    /// Runs a command that must succeed and returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        serde_json::from_str(&self.ok(&with_json)).unwrap()
    }

    /// Runs a command that must fail and returns its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    }

    fn verify(&self, secret: &str, args: &[&str]) -> (bool, String) {
        let mut all = vec!["keys", "verify"];
        all.extend_from_slice(args);
        let output = self.run_with_stdin(&all, &format!("{secret}\n"));
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
        )
    }
}

/// A fresh SQLite deployment with two accounts, served by `keyward serve`.
struct Deployment {
    // Dropped first: the server stops before its directory goes.
    server: Serving,
    /// `keyward init --json`'s answer: the first account.
    account: Value,
    /// `keyward account create --json`'s answer: another account.
    tenant: Value,
    /// Holds the database; tests may put files of their own there.
    dir: tempfile::TempDir,
}

impl Deployment {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more `keyward serve` arguments.
    fn start_with(serve_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
        let account = initialised(&db, &["init"], "owner@example.com");
        let tenant = initialised(&db, &["account", "create"], "other@example.com");
        Self {
            server: Serving::start_with(&db, "info", serve_args),
            account,
            tenant,
            dir,
        }
    }

    /// The CLI acting with `token`.
    fn cli(&self, token: &str) -> Cli {
        Cli {
            api_url: self.server.base.clone(),
            token: token.to_owned(),
        }
    }

    /// The CLI with the first account's owner token.
    fn owner(&self) -> Cli {
        self.cli(self.account["management_token"].as_str().unwrap())
    }

    /// The CLI with the other account's token.
    fn other_account(&self) -> Cli {
        self.cli(self.tenant["management_token"].as_str().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lives_its_whole_life_from_the_command_line() {
    let deployment = Deployment::start();
    let cli = deployment.owner();
    cli.ok(&[
        "permissions",
        "create",
        "orders:read",
        "--description",
        "See orders",
    ]);
    cli.ok(&["permissions", "create", "orders:write"]);
    let catalog = cli.ok(&["permissions", "list"]);
    assert!(
        catalog.contains("orders:read") && catalog.contains("See orders"),
        "{catalog}"
    );
    let refusal = cli.fails(&["permissions", "create", "Orders"]);
    assert!(refusal.contains("[field: name]"), "{refusal}");

    let workspace = cli.json(&["workspaces", "create", "Command line"]);
    let workspace_id = workspace["id"].as_str().unwrap().to_owned();
    assert!(workspace["primary_credentials"]["secret"].is_string());
    let listed = cli.ok(&["workspaces", "list"]);
    assert!(listed.contains(&workspace_id) && listed.contains("Command line"));

    let created = cli.json(&[
        "keys",
        "create",
        "--workspace",
        &workspace_id,
        "--name",
        "Billing sync",
        "--environment",
        "production",
        "--permission",
        "orders:read",
        "--rate-limit",
        "100/1m",
        "--expires-in",
        "30d",
        "--customer-id",
        "cus_42",
        "--meta",
        "plan=pro",
        "--meta",
        "seats=5",
    ]);
    let key = &created["key"];
    let id = key["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kw_live_"), "{secret}");
    assert_eq!(key["permissions"], json!(["orders:read"]));
    assert_eq!(
        key["rate_limit"],
        json!({"limit": 100, "window_seconds": 60})
    );
    assert_eq!(key["customer_id"], "cus_42");
    assert_eq!(key["meta"], json!({"plan": "pro", "seats": 5}));
    assert!(key["expires_at"].is_string());

    let ingest_only = cli.ok(&[
        "keys",
        "list",
        "--workspace",
        &workspace_id,
        "--kind",
        "ingest",
    ]);
    assert!(
        !ingest_only.contains(&id),
        "a secret key is not listed as ingest"
    );
    let listed = cli.ok(&["keys", "list", "--workspace", &workspace_id]);
    let row = listed
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed in\n{listed}"));
    for cell in [
        "Billing sync",
        "production",
        "active",
        "orders:read",
        "never",
    ] {
        assert!(row.contains(cell), "{cell} missing from {row:?}");
    }
    assert!(!listed.contains(&secret), "the list shows the secret");
    let shown = cli.ok(&["keys", "get", &id]);
    assert!(
        shown.contains("100/1m") && shown.contains("cus_42"),
        "{shown}"
    );

    let (valid, verdict) = cli.verify(
        &secret,
        &["--permission", "orders:read", "--customer-id", "cus_42"],
    );
    assert!(valid, "{verdict}");
    assert!(verdict.contains(&id), "{verdict}");
    let (valid, verdict) = cli.verify(
        &secret,
        &["--permission", "orders:write", "--customer-id", "cus_42"],
    );
    assert!(
        !valid && verdict.contains("insufficient_permissions"),
        "{verdict}"
    );
    // Verifications reach the log in batches: wait (up to a generous
    // deadline) for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while cli.json(&["keys", "logs", &id]).as_array().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the verifications were not logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let logs = cli.ok(&["keys", "logs", &id]);
    let newest = logs.lines().nth(1).unwrap_or_default();
    assert!(
        newest.contains("insufficient_permissions") && newest.contains("POST /v1/verify"),
        "{logs}"
    );
    let valid_only = cli.json(&["keys", "logs", &id, "--code", "valid"]);
    assert_eq!(valid_only.as_array().unwrap().len(), 1, "{valid_only}");

    let rotated = cli.json(&["keys", "rotate", &id, "--grace", "1h"]);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["key"]["rotation"]["in_grace_period"], true);
    for s in [&secret, &new_secret] {
        let (valid, verdict) = cli.verify(s, &["--customer-id", "cus_42"]);
        assert!(valid, "a secret in its grace period refused: {verdict}");
    }

    assert!(cli.ok(&["keys", "disable", &id]).contains("inactive"));
    let (valid, verdict) = cli.verify(&new_secret, &["--customer-id", "cus_42"]);
    assert!(!valid && verdict.contains("key_inactive"), "{verdict}");
    assert!(cli.ok(&["keys", "enable", &id]).contains("active"));

    let updated = cli.json(&[
        "keys",
        "update",
        &id,
        "--name",
        "Billing sync v2",
        "--no-rate-limit",
        "--no-customer",
    ]);
    assert_eq!(updated["name"], "Billing sync v2");
    assert_eq!(updated["rate_limit"], Value::Null);
    assert_eq!(updated["customer_id"], Value::Null);
    assert_eq!(
        updated["permissions"],
        json!(["orders:read"]),
        "an unnamed setting changed"
    );

    let refusal = cli.fails(&["keys", "delete", &id]);
    assert!(refusal.contains("--confirm-name"), "{refusal}");
    let refusal = cli.fails(&["keys", "delete", &id, "--confirm-name", "Billing sync"]);
    assert!(refusal.contains("confirm_name"), "{refusal}");
    assert_eq!(cli.json(&["keys", "get", &id])["id"], id.as_str());
    cli.ok(&["keys", "delete", &id, "--confirm-name", "Billing sync v2"]);
    let gone = cli.fails(&["keys", "get", &id]);
    assert!(gone.contains("404"), "{gone}");

    let refusal = cli.fails(&[
        "workspaces",
        "delete",
        &workspace_id,
        "--confirm-name",
        "Command",
    ]);
    assert!(refusal.contains("nothing was deleted"), "{refusal}");
    cli.ok(&[
        "workspaces",
        "delete",
        &workspace_id,
        "--confirm-name",
        "Command line",
    ]);
    assert!(!cli.ok(&["workspaces", "list"]).contains(&workspace_id));

    let log = deployment.server.stop();
    for s in [&secret, &new_secret, &cli.token] {
        assert!(!log.contains(s.as_str()), "a secret reached the server log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_field_and_other_accounts_stay_out_of_reach() {
    let deployment = Deployment::start();
    let (account, server) = (&deployment.account, &deployment.server);
    let cli = deployment.owner();
    let workspace = account["workspace_id"].as_str().unwrap();
    let key_count = || {
        cli.json(&["keys", "list", "--workspace", workspace])
            .as_array()
            .unwrap()
            .len()
    };
    let keys_before = key_count();

    let bad_ip = cli.fails(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--name",
        "K",
        "--environment",
        "production",
        "--allowed-ip",
        "10.0.0.0/8,999.1.1.1",
    ]);
    assert!(bad_ip.contains("[field: allowed_ips[1]]"), "{bad_ip}");
    let unknown_permission = cli.fails(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--name",
        "K",
        "--environment",
        "production",
        "--permission",
        "nowhere:read",
    ]);
    assert!(
        unknown_permission.contains("permissions"),
        "{unknown_permission}"
    );
    let bad_limit = cli.fails(&["keys", "update", "key_x", "--rate-limit", "0/1m"]);
    assert!(bad_limit.contains("--rate-limit"), "{bad_limit}");
    let nothing = cli.fails(&["keys", "update", "key_x"]);
    assert!(nothing.contains("nothing to change"), "{nothing}");
    let dot = cli.fails(&["keys", "disable", ".."]);
    assert!(dot.contains("not an id"), "{dot}");
    assert_eq!(
        key_count(),
        keys_before,
        "a refused create left a key behind"
    );

    let created = cli.json(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--name",
        "Mine",
        "--environment",
        "production",
    ]);
    let id = created["key"]["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    let intruder = deployment.other_account();
    for args in [
        vec!["keys", "get", id],
        vec!["keys", "revoke", id],
        vec!["keys", "delete", id, "--confirm-name", "Mine"],
        vec!["keys", "list", "--workspace", workspace],
        vec!["workspaces", "get", workspace],
    ] {
        let refusal = intruder.fails(&args);
        assert!(refusal.contains("404"), "{args:?}: {refusal}");
    }
    let (valid, verdict) = intruder.verify(secret, &[]);
    assert!(!valid && verdict.contains("unknown_key"), "{verdict}");
    assert_eq!(cli.json(&["keys", "get", id])["status"], "active");

    let no_token = Command::new(BIN)
        .args(["keys", "get", id])
        .env("KEYWARD_API_URL", &server.base)
        .env_remove("KEYWARD_TOKEN")
        .env_remove("KEYWARD_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("KEYWARD_TOKEN"));

    let token_file = deployment.dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", cli.token)).unwrap();
    let from_file = Command::new(BIN)
        .args(["keys", "get", id, "--token-file"])
        .arg(&token_file)
        .env("KEYWARD_API_URL", &server.base)
        .env_remove("KEYWARD_TOKEN")
        .output()
        .unwrap();
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );

    let wrong_token = deployment.cli("kw_mgmt_not_a_real_token");
    let refusal = wrong_token.fails(&["workspaces", "list"]);
    assert!(refusal.contains("401"), "{refusal}");
    assert!(
        !refusal.contains("kw_mgmt_not_a_real_token"),
        "the token was echoed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_a_token_of_its_own_and_loses_it_at_once() {
    let deployment = Deployment::start();
    let account = &deployment.account;
    let owner = deployment.owner();
    let workspace = account["workspace_id"].as_str().unwrap();
    let key = owner.json(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--name",
        "Customer key",
        "--environment",
        "production",
    ]);
    let key_secret = key["secret"].as_str().unwrap();

    // Refused before anything is made: unknown permission, none at all.
    let unknown = owner.fails(&["tokens", "create", "CI", "--permission", "keys:all"]);
    assert!(
        unknown.contains("400") && unknown.contains("permissions"),
        "{unknown}"
    );
    let none = owner.fails(&["tokens", "create", "CI"]);
    assert!(none.contains("--permission"), "{none}");
    assert_eq!(owner.json(&["tokens", "list"]).as_array().unwrap().len(), 1);

    // A verify-only token for the platform's backend, expiring in 30 days.
    let created = owner.json(&[
        "tokens",
        "create",
        "Checkout service",
        "--permission",
        "keys:verify",
        "--expires-in",
        "30d",
    ]);
    assert_eq!(created["token"]["permissions"], json!(["keys:verify"]));
    let expires = time::OffsetDateTime::parse(
        created["token"]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_hours() / 24;
    assert_eq!(days, 29, "30 days from now, less the seconds since");
    let service = deployment.cli(created["secret"].as_str().unwrap());
    let (valid, said) = service.verify(key_secret, &[]);
    assert!(valid && said.starts_with("valid: "), "{said}");
    let refused = service.fails(&["keys", "list", "--workspace", workspace]);
    assert!(refused.contains("403"), "verify only: {refused}");

    // Listed by name and what it may do, never with the token itself.
    let listed = owner.ok(&["tokens", "list"]);
    assert!(
        listed.contains("Checkout service") && listed.contains("keys:verify"),
        "{listed}"
    );
    assert!(!listed.contains(&service.token));
    let printed = owner.ok(&[
        "tokens",
        "create",
        "Nightly report",
        "--permission",
        "keys:verify",
    ]);
    assert!(
        printed.contains("shown once") && printed.contains("kw_mgmt_"),
        "{printed}"
    );
    assert!(printed.contains("expires: never"), "{printed}");

    // Another account's token is out of reach.
    let theirs = deployment.other_account();
    let their_id = theirs.json(&["tokens", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let not_found = owner.fails(&["tokens", "revoke", &their_id]);
    assert!(not_found.contains("not_found (404)"), "{not_found}");
    assert_eq!(
        theirs.json(&["tokens", "list"]).as_array().unwrap().len(),
        1
    );

    // Revoked: the next request with it is refused.
    let id = created["token"]["id"].as_str().unwrap();
    assert!(owner.ok(&["tokens", "revoke", id]).contains("Revoked"));
    let after = service.run_with_stdin(&["keys", "verify"], &format!("{key_secret}\n"));
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("401"));
}

/// A key's id and secret, as `keys create --json` answered.
fn issued(cli: &Cli, workspace: &str, name: &str, environment: &str) -> (String, String) {
    let created = cli.json(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--name",
        name,
        "--environment",
        environment,
    ]);
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    (text(&created["key"]["id"]), text(&created["secret"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_jobs_log_exports_and_the_audit_log_from_the_command_line() {
    let deployment = Deployment::start();
    let owner = deployment.owner();
    let workspace = deployment.account["workspace_id"].as_str().unwrap();
    let (web, web_secret) = issued(&owner, workspace, "Web", "production");
    let batch = [
        issued(&owner, workspace, "Batch 1", "staging"),
        issued(&owner, workspace, "Batch 2", "staging"),
    ];
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();

    // Refused by the API, naming the field; nothing is started.
    let rotate = ["jobs", "start", "rotate-keys", "--workspace", workspace];
    let no_recipient = owner.fails(&rotate);
    assert!(
        no_recipient.contains("[field: recipient]"),
        "{no_recipient}"
    );
    let too_long =
        owner.fails(&[&rotate[..], &["--recipient", &recipient, "--grace", "8d"]].concat());
    assert!(too_long.contains("[field: grace_seconds]"), "{too_long}");
    let disable = ["jobs", "start", "disable-keys", "--workspace", workspace];
    let stray = owner.fails(&[&disable[..], &["--recipient", &recipient]].concat());
    assert!(stray.contains("[field: recipient]"), "{stray}");
    assert_eq!(owner.json(&["jobs", "list"]), json!([]));

    // A rotation of the staging keys, seen through to the end.
    let rotation = owner.json(
        &[
            &rotate[..],
            &[
                "--environment",
                "staging",
                "--recipient",
                &recipient,
                "--grace",
                "1h",
                "--wait",
            ],
        ]
        .concat(),
    );
    assert_eq!(rotation["status"], "succeeded", "{rotation}");
    assert_eq!(rotation["result"]["rotated"], 2, "{rotation}");
    let rotation_id = rotation["id"].as_str().unwrap();
    let shown = owner.ok(&["jobs", "get", rotation_id]);
    assert!(
        shown.contains("succeeded, 2/2 keys") && shown.contains("jobs secrets"),
        "{shown}"
    );

    // The new secrets come only encrypted: saved as files, opened with the
    // identity, each verifies; the replaced ones still work in the grace.
    let out_dir = deployment.dir.path().join("secrets");
    let out = out_dir.to_str().unwrap();
    let listed = owner.ok(&["jobs", "secrets", rotation_id, "--out-dir", out]);
    assert!(
        listed.contains("Batch 1") && listed.contains("Batch 2"),
        "{listed}"
    );
    for (id, old_secret) in &batch {
        let sealed = std::fs::read(out_dir.join(format!("{id}.age"))).unwrap();
        let new_secret = String::from_utf8(age::decrypt(&identity, &sealed).unwrap()).unwrap();
        assert!(!listed.contains(&new_secret), "printed in the clear");
        for secret in [&new_secret, old_secret] {
            let (valid, said) = owner.verify(secret, &[]);
            assert!(valid, "{said}");
        }
    }
    let again = owner.fails(&["jobs", "secrets", rotation_id, "--out-dir", out]);
    assert!(again.contains("--out-dir"), "never overwritten: {again}");

    // A bulk disable of production, and the list newest first.
    let disabled = owner.ok(&[&disable[..], &["--environment", "production", "--wait"]].concat());
    assert!(
        disabled.contains("succeeded") && disabled.contains("changed"),
        "{disabled}"
    );
    let (valid, _) = owner.verify(&web_secret, &[]);
    assert!(!valid, "disabled by the job");
    let jobs = owner.ok(&["jobs", "list"]);
    let kinds: Vec<&str> = jobs
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(kinds, ["disable_keys", "rotate_keys"], "{jobs}");
    let first = owner.json(&["jobs", "list", "--oldest-first", "--limit", "1"]);
    assert_eq!(first[0]["id"], rotation_id);

    // The rotated keys' verifications, exported and downloaded.
    let (batch_key, _) = &batch[0];
    let logged = || {
        owner
            .json(&["keys", "logs", batch_key])
            .as_array()
            .unwrap()
            .len()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while logged() < 2 {
        assert!(std::time::Instant::now() < deadline, "logs never flushed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let export = owner.json(&[
        "jobs",
        "start",
        "export-logs",
        "--key",
        batch_key,
        "--format",
        "ndjson",
        "--since",
        "1h",
        "--wait",
    ]);
    assert_eq!(export["result"]["rows"], 2, "{export}");
    let export_id = export["id"].as_str().unwrap();
    let file = deployment.dir.path().join("logs.ndjson.gz");
    let file_arg = file.to_str().unwrap();
    owner.ok(&["jobs", "download", export_id, "--output", file_arg]);
    let mut text = String::new();
    let compressed = std::fs::read(&file).unwrap();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(compressed.as_slice()),
        &mut text,
    )
    .unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows.iter()
            .all(|r| r["key_id"] == batch_key.as_str() && r["code"] == "valid")
    );
    let again = owner.fails(&["jobs", "download", export_id, "--output", file_arg]);
    assert!(again.contains("--output"), "never overwritten: {again}");
    let no_file = owner.fails(&["jobs", "download", rotation_id, "-o", "-"]);
    assert!(no_file.contains("not_an_export (409)"), "{no_file}");
    let stray = owner.fails(&["jobs", "start", "export-logs", "--status", "active"]);
    assert!(stray.contains("[field: status]"), "{stray}");
    let to_stdout = owner
        .command(&["jobs", "download", export_id, "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(to_stdout.stdout, compressed);

    // The audit log, newest first, filtered; every secret stays out of it.
    let events = owner.json(&["audit", "events"]);
    let seqs: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.len() > 5 && seqs.windows(2).all(|w| w[0] == w[1] + 1),
        "{seqs:?}"
    );
    let oldest = owner.json(&["audit", "events", "--oldest-first", "--limit", "1"]);
    assert_eq!(oldest[0]["action"], "account.created");
    let rotated = owner.json(&["audit", "events", "--action", "key.rotated"]);
    assert_eq!(rotated.as_array().unwrap().len(), 2);
    assert!(
        rotated
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["after"]["job_id"] == rotation_id)
    );
    let history = owner.ok(&["audit", "events", "--object", &web]);
    let (disabled_at, created_at) = (history.find("key.disabled"), history.find("key.created"));
    assert!(
        disabled_at.is_some() && disabled_at < created_at,
        "{history}"
    );
    assert!(!history.contains(&web_secret));
    let future = owner.ok(&["audit", "events", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future.trim(), "No audit events match.");
    let recent = owner.json(&[
        "audit",
        "events",
        "--since",
        "1h",
        "--action",
        "key.disabled",
    ]);
    assert!(!recent.as_array().unwrap().is_empty());
    let vague = owner.fails(&["audit", "events", "--since", "yesterday"]);
    assert!(vague.contains("--since"), "{vague}");

    // Another account reaches none of it.
    let theirs = deployment.other_account();
    let hidden = theirs.fails(&["jobs", "get", rotation_id]);
    assert!(hidden.contains("not_found (404)"), "{hidden}");
    let sealed = theirs.fails(&["jobs", "secrets", rotation_id]);
    assert!(sealed.contains("not_found (404)"), "{sealed}");
    assert_eq!(theirs.json(&["jobs", "list"]), json!([]));
    let foreign = theirs.json(&["audit", "events", "--object", &web]);
    assert_eq!(foreign, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_and_members_from_the_command_line() {
    let deployment = Deployment::start();
    let owner = deployment.owner();
    let theirs = deployment.other_account();
    let workspace = deployment.account["workspace_id"].as_str().unwrap();
    let (_, secret) = issued(&owner, workspace, "Office sync", "production");
    let verdict_from = |ip: &str| owner.verify(&secret, &["--ip", ip]);

    // Seed 001: an allowlisted workspace refuses every other address.
    let none = owner.ok(&["allowlist", "list"]);
    assert!(none.contains("No entries"), "{none}");
    assert!(verdict_from("203.0.113.7").0);
    let added = owner.json(&[
        "allowlist",
        "add",
        "198.51.100.0/24",
        "--workspace",
        workspace,
        "--description",
        "Office",
    ]);
    let entry = added["id"].as_str().unwrap();
    let listed = owner.ok(&["allowlist", "list"]);
    assert!(
        listed.contains("198.51.100.0/24") && listed.contains("Office"),
        "{listed}"
    );
    let (valid, said) = verdict_from("203.0.113.7");
    assert!(!valid && said.contains("ip_not_allowed"), "{said}");
    assert!(verdict_from("198.51.100.20").0);
    let bad = owner.fails(&["allowlist", "add", "300.1.1.1", "--workspace", workspace]);
    assert!(bad.contains("[field: address]"), "{bad}");
    let foreign = theirs.fails(&["allowlist", "remove", entry]);
    assert!(foreign.contains("not_found (404)"), "{foreign}");
    assert!(
        owner
            .ok(&["allowlist", "remove", entry])
            .contains("Removed")
    );
    assert!(verdict_from("203.0.113.7").0, "open again");

    // Members: added with a grant and an invitation, changed, removed.
    let dev = owner.json(&[
        "members",
        "add",
        "dev@example.com",
        "--permission",
        "manage_api_credentials",
    ]);
    let dev_id = dev["id"].as_str().unwrap();
    assert!(
        dev["invitation"]["path"]
            .as_str()
            .unwrap()
            .starts_with("/invitations/")
    );
    let members = owner.ok(&["members", "list"]);
    let row = members
        .lines()
        .find(|l| l.contains("dev@example.com"))
        .unwrap();
    assert!(
        row.contains("member") && row.contains("manage_api_credentials"),
        "{row}"
    );
    let printed = owner.ok(&["members", "add", "ops@example.com"]);
    assert!(
        printed.contains("choose a password at https://"),
        "{printed}"
    );
    let demoted = owner.ok(&["members", "update", dev_id, "--no-permissions"]);
    assert!(demoted.contains("may do: nothing"), "{demoted}");
    let idle = owner.fails(&["members", "update", dev_id]);
    assert!(idle.contains("nothing to change"), "{idle}");
    let role = owner.fails(&["members", "add", "x@example.com", "--role", "overlord"]);
    assert!(role.contains("400") && role.contains("role"), "{role}");
    let foreign = theirs.fails(&["members", "update", dev_id, "--role", "admin"]);
    assert!(foreign.contains("not_found (404)"), "{foreign}");
    owner.ok(&["members", "remove", dev_id]);
    assert!(!owner.ok(&["members", "list"]).contains("dev@example.com"));
}

/// GitHub's published key document, served on loopback; returns its URL.
async fn github_key_document(key: &p256::ecdsa::SigningKey) -> String {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let document = json!({"public_keys": [{
        "key_identifier": "gh-1",
        "key": key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
        "is_current": true,
    }]})
    .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let app =
        axum::Router::new().route("/keys", axum::routing::get(move || async move { document }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_alerts_revoke_a_served_key_and_the_cli_says_where_it_was_found() {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let github = p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
    let keys_url = github_key_document(&github).await;
    let deployment = Deployment::start_with(&[
        "--github-secret-scanning",
        "--github-public-keys-url",
        &keys_url,
    ]);
    let owner = deployment.owner();
    let workspace = deployment.account["workspace_id"].as_str().unwrap();
    let (id, secret) = issued(&owner, workspace, "Pushed by mistake", "production");
    assert!(owner.ok(&["keys", "leaks", &id]).contains("No reports"));

    let location = "https://github.com/octo/app/blob/1f2e/.env";
    let body =
        json!([{"token": secret, "type": "keyward_api_key", "url": location, "source": "commit"}])
            .to_string();
    let signature: p256::ecdsa::Signature = github.sign(body.as_bytes());
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/secret-scanning/github",
            deployment.server.base
        ))
        .header("Github-Public-Key-Identifier", "gh-1")
        .header(
            "Github-Public-Key-Signature",
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let labels: Value = response.json().await.unwrap();
    assert_eq!(labels[0]["label"], "true_positive");

    let leaks = owner.ok(&["keys", "leaks", &id]);
    assert!(
        leaks.contains(location) && leaks.contains("revoked"),
        "{leaks}"
    );
    let shown = owner.ok(&["keys", "get", &id]);
    assert!(shown.contains("LEAKED"), "{shown}");
    assert!(!owner.verify(&secret, &[]).0, "the key no longer verifies");
    let refused = deployment.other_account().fails(&["keys", "leaks", &id]);
    assert!(refused.contains("404"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_another_system_are_imported_from_a_file_and_verify() {
    let deployment = Deployment::start_with(&["--accept-imported-keys"]);
    let owner = deployment.owner();
    let workspace = deployment.account["workspace_id"].as_str().unwrap();
    let legacy = "sk_live_51HxKeyFromThePreviousSystem01";
    let file = deployment.dir.path().join("legacy-keys.json");
    let keys = json!([{
        "hash": keyward_core::KeyHash::of(legacy).to_hex(),
        "hint": "sk_live_51Hx",
        "name": "Acme (legacy)",
        "environment": "production",
    }]);
    std::fs::write(&file, keys.to_string()).unwrap();
    let import = [
        "keys",
        "import",
        "--workspace",
        workspace,
        file.to_str().unwrap(),
    ];
    let printed = owner.ok(&import);
    assert!(
        printed.contains("Imported 1 key:") && printed.contains("sk_live_51Hx…"),
        "{printed}"
    );
    assert!(!printed.contains(legacy));
    assert!(owner.verify(legacy, &["--environment", "production"]).0);

    let refused = owner.fails(&import);
    assert!(refused.contains("keys[0].hash"), "{refused}");
    std::fs::write(&file, "not json").unwrap();
    let refused = owner.fails(&import);
    assert!(refused.contains("not a JSON array of keys"), "{refused}");
}

/// A metered key from the command line: created with credits and a
/// refill, spent by `keys verify --cost`, topped up, then unmetered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_keys_are_spent_topped_up_and_unmetered_from_the_cli() {
    let deployment = Deployment::start();
    let owner = deployment.owner();
    let workspace = deployment.account["workspace_id"].as_str().unwrap();
    let created = owner.json(&[
        "keys",
        "create",
        "--workspace",
        workspace,
        "--name",
        "Metered",
        "--environment",
        "production",
        "--credits",
        "3",
        "--refill",
        "monthly:1000@15",
    ]);
    let id = created["key"]["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    let shown = owner.ok(&["keys", "get", id]);
    assert!(shown.contains("3 left, refills monthly:1000@15"), "{shown}");

    let (valid, printed) = owner.verify(secret, &["--cost", "3"]);
    assert!(valid && printed.contains("credits: 0 left"), "{printed}");
    let (valid, printed) = owner.verify(secret, &[]);
    assert!(
        !valid
            && printed.contains("rate_limited (your API would answer 429)")
            && printed.contains("credits: 0 left"),
        "{printed}"
    );

    let topped = owner.ok(&["keys", "credits", id, "--add", "5"]);
    assert!(topped.contains("5 left"), "{topped}");
    let taken = owner.ok(&["keys", "credits", id, "--add", "-2"]);
    assert!(taken.contains("3 left"), "{taken}");
    assert!(owner.verify(secret, &[]).0);
    let listed = owner.ok(&["keys", "list", "--workspace", workspace]);
    let row = listed.lines().find(|l| l.contains(id)).expect("key listed");
    assert!(
        row.split_whitespace().any(|cell| cell == "2"),
        "CREDITS column: {listed}"
    );

    owner.ok(&["keys", "update", id, "--no-credits"]);
    assert!(owner.ok(&["keys", "get", id]).contains("unlimited"));
    let refused = owner.fails(&["keys", "credits", id, "--set", "10"]);
    assert!(refused.contains("[field: credits]"), "{refused}");
}
