//! `keyward keys …`: issue and manage API keys through the admin API.

use crate::output::{self, fields, json_if_asked, list_or, table, text_or};
use crate::remote::{ApiArgs, ApiClient};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use keyward_core::{CreditRefill, DurationSeconds, RateLimitPolicy, parse_duration_seconds};
use serde_json::{Map, Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Args)]
pub struct KeysArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List a workspace's keys: status, hint, permissions, credits left and last use.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// Only keys of this environment.
        #[arg(long)]
        environment: Option<String>,
        /// Only keys in this status: active, inactive, expired or revoked.
        #[arg(long)]
        status: Option<String>,
        /// Only keys of this kind: secret, ingest or publishable.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many keys (the list is read page by page).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Issue a key. Its secret is printed once: Keyward keeps only its hash.
    Create(CreateArgs),
    /// Show one key.
    Get { id: String },
    /// Create keys issued by another system from their SHA-256 hashes, so
    /// its clients keep their keys: FILE (or `-` for standard input) holds
    /// a JSON array of `{"hash", "hint"?, "name", "environment", …}`, at
    /// most 1,000, created all or none. The deployment must run with
    /// `--accept-imported-keys`.
    Import {
        #[command(flatten)]
        workspace: WorkspaceArg,
        file: PathBuf,
    },
    /// Change a key's name, permissions, limits or scope; what is not
    /// named stays as it is.
    Update(UpdateArgs),
    /// Give a key a new secret (printed once). With `--grace`, the old
    /// secret keeps working that long, so clients can move over.
    Rotate {
        id: String,
        /// How long the replaced secret keeps working (`15m`, `1d`; at most `7d`).
        #[arg(long, value_parser = parse_duration_seconds)]
        grace: Option<u64>,
    },
    /// Stop a key from verifying until it is enabled again.
    Disable { id: String },
    /// Let a disabled key verify again.
    Enable { id: String },
    /// Revoke a key for good: it never verifies again, its history stays.
    Revoke {
        id: String,
        /// Revoke although integrations still use the key.
        #[arg(long)]
        force: bool,
    },
    /// Delete a key and its history. Asks for the key's name first, or
    /// takes it from `--confirm-name`.
    Delete {
        id: String,
        /// The key's name, repeated, for use without a terminal.
        #[arg(long)]
        confirm_name: Option<String>,
        /// Delete although integrations still use the key.
        #[arg(long)]
        force: bool,
    },
    /// The key's latest verifications, newest first: outcome, client
    /// address, request and time.
    Logs {
        id: String,
        /// Only this outcome (`valid`, `rate_limited`, `ip_not_allowed`…).
        #[arg(long)]
        code: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Where the key's secrets were found in public (GitHub secret
    /// scanning) and what Keyward did, newest first.
    Leaks { id: String },
    /// Top up, take from or set a metered key's credits (`keys update
    /// --credits` meters a key).
    Credits(CreditsArgs),
    /// Check a key as your API would: reads it from standard input and
    /// prints the verdict. Exits 1 when the key is not valid.
    Verify {
        /// Permissions the request needs (repeat or comma-separate).
        #[arg(long = "permission", value_delimiter = ',')]
        permissions: Vec<String>,
        /// The environment the request is for.
        #[arg(long)]
        environment: Option<String>,
        /// The client's address, for IP allowlists.
        #[arg(long)]
        ip: Option<String>,
        /// The customer the request acts for.
        #[arg(long)]
        customer_id: Option<String>,
        /// What the request takes from a metered key's credits (default 1).
        #[arg(long)]
        cost: Option<u64>,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["add", "set"])))]
struct CreditsArgs {
    id: String,
    /// Credits to add; negative takes them away (never below 0).
    #[arg(long, allow_negative_numbers = true)]
    add: Option<i64>,
    /// The new balance.
    #[arg(long)]
    set: Option<u64>,
}

#[derive(Args)]
struct WorkspaceArg {
    /// The workspace's id (`keyward workspaces list` shows them).
    #[arg(long, env = "KEYWARD_WORKSPACE")]
    workspace: String,
}

#[derive(Args)]
struct CreateArgs {
    #[command(flatten)]
    workspace: WorkspaceArg,
    /// Unique within the workspace, e.g. "Main Website Integration".
    #[arg(long)]
    name: String,
    /// The environment the key works in (production, staging, development…).
    #[arg(long)]
    environment: String,
    /// secret (the default), ingest or publishable.
    #[arg(long)]
    kind: Option<String>,
    #[command(flatten)]
    settings: KeySettings,
}

#[derive(Args)]
struct UpdateArgs {
    id: String,
    /// A new name.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    settings: KeySettings,
    /// Remove every permission.
    #[arg(long, conflicts_with = "permissions")]
    clear_permissions: bool,
    /// Remove the rate limit.
    #[arg(long, conflicts_with = "rate_limit")]
    no_rate_limit: bool,
    /// Make the key never expire.
    #[arg(long, conflicts_with_all = ["expires_at", "expires_in"])]
    no_expiry: bool,
    /// Let the key act for any customer.
    #[arg(long, conflicts_with = "customer_id")]
    no_customer: bool,
    /// Remove the key's own IP allowlist (the workspace's still applies).
    #[arg(long, conflicts_with = "allowed_ips")]
    clear_allowed_ips: bool,
    /// Stop metering the key: no more credits to spend.
    #[arg(long, conflicts_with = "credits")]
    no_credits: bool,
}

/// What both `create` and `update` can set.
#[derive(Args)]
struct KeySettings {
    /// Permissions the key holds, from the account's catalog (repeat or
    /// comma-separate). On update, they replace the key's permissions.
    #[arg(long = "permission", value_delimiter = ',')]
    permissions: Vec<String>,
    /// At most LIMIT requests per WINDOW: `100/1m`, `5000/1h`.
    #[arg(long, value_name = "LIMIT/WINDOW")]
    rate_limit: Option<RateLimitPolicy>,
    /// When the key stops working (RFC 3339: 2027-01-31T00:00:00Z).
    #[arg(long, conflicts_with = "expires_in")]
    expires_at: Option<String>,
    /// Or how long from now it works (`90d`, `12h`).
    #[arg(long, value_parser = parse_duration_seconds)]
    expires_in: Option<u64>,
    /// The one customer of yours the key acts for.
    #[arg(long)]
    customer_id: Option<String>,
    /// Addresses or CIDR ranges the key may be used from (repeat or
    /// comma-separate). On update, they replace the key's list.
    #[arg(long = "allowed-ip", value_delimiter = ',')]
    allowed_ips: Vec<String>,
    /// Publishable keys: web origins that may present the key.
    #[arg(long = "allowed-origin", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// `KEY=VALUE` returned with every verification (VALUE is JSON if it
    /// parses as JSON, else a string). On update, they replace the key's meta.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, Value)>,
    /// Meters the key: each valid verification spends its cost (1 by
    /// default) from this balance; once it is spent the key answers
    /// `rate_limited` (429).
    /// On update, the balance starts over.
    #[arg(long)]
    credits: Option<u64>,
    /// Sets the balance back every day or month: `daily:1000`,
    /// `monthly:50000` (on the 1st), `monthly:50000@15`.
    #[arg(long, requires = "credits", value_name = "INTERVAL:AMOUNT[@DAY]")]
    refill: Option<CreditRefill>,
}

impl KeySettings {
    fn write_into(&self, body: &mut Map<String, Value>) -> Result<()> {
        if !self.permissions.is_empty() {
            body.insert("permissions".into(), json!(self.permissions));
        }
        if let Some(policy) = self.rate_limit {
            body.insert("rate_limit".into(), json!(policy));
        }
        if let Some(at) = &self.expires_at {
            body.insert("expires_at".into(), json!(at));
        }
        if let Some(seconds) = self.expires_in {
            body.insert("expires_at".into(), json!(from_now(seconds)?));
        }
        if let Some(customer) = &self.customer_id {
            body.insert("customer_id".into(), json!(customer));
        }
        if !self.allowed_ips.is_empty() {
            body.insert("allowed_ips".into(), json!(self.allowed_ips));
        }
        if !self.allowed_origins.is_empty() {
            body.insert("allowed_origins".into(), json!(self.allowed_origins));
        }
        if !self.meta.is_empty() {
            let meta: Map<String, Value> = self.meta.iter().cloned().collect();
            body.insert("meta".into(), Value::Object(meta));
        }
        if let Some(remaining) = self.credits {
            body.insert(
                "credits".into(),
                json!({"remaining": remaining, "refill": self.refill}),
            );
        }
        Ok(())
    }
}

pub(crate) fn from_now(seconds: u64) -> Result<String> {
    let seconds = i64::try_from(seconds).context("--expires-in is too long")?;
    let at = time::OffsetDateTime::now_utc()
        .checked_add(time::Duration::seconds(seconds))
        .context("--expires-in is too long")?;
    Ok(at.format(&time::format_description::well_known::Rfc3339)?)
}

fn parse_meta(s: &str) -> Result<(String, Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| "must be KEY=VALUE".to_owned())?;
    if key.is_empty() {
        return Err("KEY must not be empty".to_owned());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// Runs one `keys` command; `verify` exits 1 when the key is not valid.
pub async fn run(args: KeysArgs) -> Result<ExitCode> {
    let api = args.api.client()?;
    let json = args.api.json;
    match args.command {
        KeysCommand::List {
            workspace,
            environment,
            status,
            kind,
            limit,
        } => {
            let mut url = api.url(&["workspaces", &workspace.workspace, "keys"])?;
            let filter = [
                ("environment", environment),
                ("status", status),
                ("kind", kind),
            ];
            for (name, value) in filter {
                if let Some(value) = value {
                    url.query_pairs_mut().append_pair(name, &value);
                }
            }
            let keys = api.list(url, limit).await?;
            if !json_if_asked(json, &Value::Array(keys.clone())) {
                print_key_table(&keys);
            }
        }
        KeysCommand::Create(create) => {
            let mut body = Map::new();
            body.insert("name".into(), json!(create.name));
            body.insert("environment".into(), json!(create.environment));
            if let Some(kind) = create.kind {
                body.insert("kind".into(), json!(kind));
            }
            create.settings.write_into(&mut body)?;
            let url = api.url(&["workspaces", &create.workspace.workspace, "keys"])?;
            let created = api.post(url, &Value::Object(body)).await?;
            if !json_if_asked(json, &created) {
                println!("Created key:");
                print_key(&created["key"]);
                output::secret("Secret", &created["secret"]);
            }
        }
        KeysCommand::Import { workspace, file } => {
            let keys = read_import_file(&file)?;
            let url = api.url(&["workspaces", &workspace.workspace, "keys", "import"])?;
            let imported = api.post(url, &json!({ "keys": keys })).await?;
            if !json_if_asked(json, &imported["data"]) {
                let keys = imported["data"].as_array().map_or(&[][..], Vec::as_slice);
                let noun = if keys.len() == 1 { "key" } else { "keys" };
                println!("Imported {} {noun}:", keys.len());
                print_key_table(keys);
            }
        }
        KeysCommand::Get { id } => {
            let key = api.get(api.url(&["keys", &id])?).await?;
            if !json_if_asked(json, &key) {
                print_key(&key);
            }
        }
        KeysCommand::Update(update) => {
            let body = update_body(&update)?;
            if body.is_empty() {
                bail!(
                    "nothing to change: name at least one setting (see `keyward keys update --help`)"
                );
            }
            let key = api
                .patch(api.url(&["keys", &update.id])?, &Value::Object(body))
                .await?;
            if !json_if_asked(json, &key) {
                println!("Updated key:");
                print_key(&key);
            }
        }
        KeysCommand::Rotate { id, grace } => {
            let body = json!({ "grace_seconds": grace.unwrap_or(0) });
            let rotated = api.post(api.url(&["keys", &id, "rotate"])?, &body).await?;
            if !json_if_asked(json, &rotated) {
                println!("Rotated key:");
                print_key(&rotated["key"]);
                output::secret("New secret", &rotated["secret"]);
            }
        }
        KeysCommand::Disable { id } => state_change(&api, json, &id, "disable", &json!({})).await?,
        KeysCommand::Enable { id } => state_change(&api, json, &id, "enable", &json!({})).await?,
        KeysCommand::Revoke { id, force } => {
            state_change(&api, json, &id, "revoke", &json!({ "force": force })).await?
        }
        KeysCommand::Delete {
            id,
            confirm_name,
            force,
        } => {
            let confirm_name = match confirm_name {
                Some(name) => name,
                None => {
                    let key = api.get(api.url(&["keys", &id])?).await?;
                    output::ask_for_name("key", &text_or(&key["name"], ""))?
                }
            };
            let body = json!({ "confirm_name": confirm_name, "force": force });
            api.delete(api.url(&["keys", &id])?, Some(&body)).await?;
            if !json_if_asked(json, &json!({ "deleted": id })) {
                println!("Deleted key {id}.");
            }
        }
        KeysCommand::Logs { id, code, limit } => {
            let mut url = api.url(&["keys", &id, "logs"])?;
            if let Some(code) = code {
                url.query_pairs_mut().append_pair("code", &code);
            }
            let entries = api.list(url, limit).await?;
            if !json_if_asked(json, &Value::Array(entries.clone())) {
                print_log_table(&entries);
            }
        }
        KeysCommand::Leaks { id } => {
            let leaks = api.get(api.url(&["keys", &id, "leaks"])?).await?;
            if !json_if_asked(json, &leaks["data"]) {
                print_leak_table(leaks["data"].as_array().map_or(&[], Vec::as_slice));
            }
        }
        KeysCommand::Credits(CreditsArgs { id, add, set }) => {
            let body = match (add, set) {
                (Some(add), _) => json!({ "add": add }),
                (None, set) => json!({ "set": set }),
            };
            let key = api.post(api.url(&["keys", &id, "credits"])?, &body).await?;
            if !json_if_asked(json, &key) {
                println!("{id}: {}.", credits_line(&key["credits"]));
            }
        }
        KeysCommand::Verify {
            permissions,
            environment,
            ip,
            customer_id,
            cost,
        } => {
            let key = read_key()?;
            let body = json!({
                "key": key.as_str(),
                "permissions": permissions,
                "environment": environment,
                "ip": ip,
                "customer_id": customer_id,
                "cost": cost,
            });
            let verdict = api.post(api.url(&["verify"])?, &body).await?;
            if !json_if_asked(json, &verdict) {
                print_verdict(&verdict);
            }
            if verdict["valid"] != Value::Bool(true) {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn update_body(update: &UpdateArgs) -> Result<Map<String, Value>> {
    let mut body = Map::new();
    if let Some(name) = &update.name {
        body.insert("name".into(), json!(name));
    }
    update.settings.write_into(&mut body)?;
    let clears = [
        (update.clear_permissions, "permissions", json!([])),
        (update.no_rate_limit, "rate_limit", Value::Null),
        (update.no_expiry, "expires_at", Value::Null),
        (update.no_customer, "customer_id", Value::Null),
        (update.clear_allowed_ips, "allowed_ips", json!([])),
        (update.no_credits, "credits", Value::Null),
    ];
    for (asked, field, cleared) in clears {
        if asked {
            body.insert(field.into(), cleared);
        }
    }
    Ok(body)
}

async fn state_change(
    api: &ApiClient,
    json: bool,
    id: &str,
    action: &str,
    body: &Value,
) -> Result<()> {
    let key = api.post(api.url(&["keys", id, action])?, body).await?;
    if !json_if_asked(json, &key) {
        println!("{}: {id} is now {}.", action, text_or(&key["status"], "?"));
    }
    Ok(())
}

/// The first line of standard input, so the key never sits in the shell's
/// history or the process list.
fn read_key() -> Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        eprint!("Key: ");
        std::io::stderr().flush().ok();
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the key from standard input")?;
    let key = Zeroizing::new(line.trim().to_owned());
    if key.is_empty() {
        bail!("no key on standard input: `keyward keys verify < key.txt`");
    }
    Ok(key)
}

/// The keys to import: a JSON array, from a file or standard input.
fn read_import_file(file: &Path) -> Result<Vec<Value>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON array of keys", file.display()))
}

fn print_key_table(keys: &[Value]) {
    if keys.is_empty() {
        println!("No keys.");
        return;
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                text_or(&k["id"], ""),
                text_or(&k["name"], ""),
                text_or(&k["environment"], ""),
                text_or(&k["status"], ""),
                text_or(&k["hint"], ""),
                list_or(&k["permissions"], "-"),
                k["credits"]["remaining"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |left| left.to_string()),
                text_or(&k["last_used_at"], "never"),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "ID",
                "NAME",
                "ENVIRONMENT",
                "STATUS",
                "HINT",
                "PERMISSIONS",
                "CREDITS",
                "LAST USED"
            ],
            &rows
        )
    );
}

fn print_log_table(entries: &[Value]) {
    if entries.is_empty() {
        println!("No verifications logged.");
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let request = match (e["method"].as_str(), e["path"].as_str()) {
                (Some(method), Some(path)) => format!("{method} {path}"),
                _ => "POST /v1/verify".to_owned(),
            };
            vec![
                text_or(&e["at"], ""),
                text_or(&e["code"], ""),
                e["status"].to_string(),
                text_or(&e["client_ip"], "-"),
                request,
                format!("{}µs", e["latency_us"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["AT", "OUTCOME", "STATUS", "CLIENT IP", "REQUEST", "LATENCY"],
            &rows
        )
    );
}

fn print_leak_table(leaks: &[Value]) {
    if leaks.is_empty() {
        println!("No reports of this key's secrets found in public.");
        return;
    }
    let rows: Vec<Vec<String>> = leaks
        .iter()
        .map(|l| {
            let done = match (l["action"].as_str(), l["reason"].as_str()) {
                (Some("flagged"), Some(reason)) => format!("flagged: {reason}"),
                (action, _) => action.unwrap_or("").to_owned(),
            };
            vec![
                text_or(&l["reported_at"], ""),
                text_or(&l["reporter"], ""),
                text_or(&l["secret"], ""),
                text_or(&l["location"], "-"),
                done,
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["REPORTED", "BY", "SECRET", "WHERE", "DONE"], &rows)
    );
}

fn print_key(key: &Value) {
    let rate_limit = serde_json::from_value::<RateLimitPolicy>(key["rate_limit"].clone())
        .map_or_else(|_| "none".to_owned(), |p| p.to_string());
    let last_used = match (key["last_used_at"].as_str(), key["last_used_ip"].as_str()) {
        (Some(at), Some(ip)) => format!("{at} from {ip}"),
        (Some(at), None) => at.to_owned(),
        _ => "never".to_owned(),
    };
    let mut pairs = vec![
        ("id", text_or(&key["id"], "")),
        ("name", text_or(&key["name"], "")),
        ("workspace", text_or(&key["workspace_id"], "")),
        ("environment", text_or(&key["environment"], "")),
        ("kind", text_or(&key["kind"], "")),
        ("status", text_or(&key["status"], "")),
        ("hint", text_or(&key["hint"], "")),
        ("permissions", list_or(&key["permissions"], "none")),
        ("rate limit", rate_limit),
        ("credits", credits_line(&key["credits"])),
        ("customer", text_or(&key["customer_id"], "any")),
        ("allowed IPs", list_or(&key["allowed_ips"], "any")),
        ("expires", text_or(&key["expires_at"], "never")),
        ("last used", last_used),
        ("created", text_or(&key["created_at"], "")),
    ];
    if let Some(at) = key["leaked_at"].as_str() {
        pairs.push((
            "LEAKED",
            format!(
                "found in public at {at}; `keyward keys leaks {}`",
                text_or(&key["id"], "")
            ),
        ));
    }
    if let Some(rotation) = key["rotation"].as_object() {
        let state = if rotation["in_grace_period"] == Value::Bool(true) {
            "works until"
        } else {
            "stopped at"
        };
        pairs.push((
            "old secret",
            format!(
                "{} {state} {}",
                text_or(&rotation["old_hint"], ""),
                text_or(&rotation["old_secret_expires_at"], "")
            ),
        ));
    }
    println!("{}", fields(&pairs));
}

/// `40 left, refills daily:1000`, or `unlimited` for a key without credits.
fn credits_line(credits: &Value) -> String {
    let Some(remaining) = credits["remaining"].as_u64() else {
        return "unlimited".to_owned();
    };
    match serde_json::from_value::<CreditRefill>(credits["refill"].clone()) {
        Ok(refill) => format!("{remaining} left, refills {refill}"),
        Err(_) => format!("{remaining} left"),
    }
}

fn print_verdict(verdict: &Value) {
    let code = text_or(&verdict["code"], "?");
    let key = &verdict["key"];
    if verdict["valid"] == Value::Bool(true) {
        println!(
            "valid: {} ({})",
            text_or(&key["id"], ""),
            text_or(&key["name"], "")
        );
    } else {
        let status = verdict["status"].as_u64().unwrap_or(0);
        println!("not valid: {code} (your API would answer {status})");
    }
    if let Some(limit) = verdict["rate_limit"].as_object() {
        println!(
            "rate limit: {} of {} left, resets in {}",
            limit["remaining"],
            limit["limit"],
            DurationSeconds(limit["reset_seconds"].as_u64().unwrap_or(0).max(1))
        );
    }
    if verdict["credits"].is_object() {
        println!("credits: {}", credits_line(&verdict["credits"]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Update {
        #[command(flatten)]
        update: UpdateArgs,
    }

    fn update(args: &[&str]) -> Map<String, Value> {
        let parsed =
            Update::try_parse_from(std::iter::once("update").chain(args.iter().copied())).unwrap();
        update_body(&parsed.update).unwrap()
    }

    #[test]
    fn meta_values_are_json_when_they_parse() {
        assert_eq!(parse_meta("plan=\"pro\"").unwrap().1, json!("pro"));
        assert_eq!(parse_meta("plan=pro").unwrap().1, json!("pro"));
        assert_eq!(parse_meta("seats=5").unwrap().1, json!(5));
        assert_eq!(parse_meta("a=b=c").unwrap(), ("a".to_owned(), json!("b=c")));
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("=x").is_err());
    }

    #[test]
    fn an_update_sends_only_what_was_named() {
        assert_eq!(
            Value::Object(update(&[
                "key_1",
                "--name",
                "New",
                "--permission",
                "a:read,b:write"
            ])),
            json!({"name": "New", "permissions": ["a:read", "b:write"]})
        );
        assert_eq!(
            Value::Object(update(&[
                "key_1",
                "--no-rate-limit",
                "--no-expiry",
                "--clear-allowed-ips"
            ])),
            json!({"rate_limit": null, "expires_at": null, "allowed_ips": []})
        );
        assert_eq!(
            Value::Object(update(&["key_1", "--rate-limit", "100/1m"])),
            json!({"rate_limit": {"limit": 100, "window_seconds": 60}})
        );
        assert_eq!(
            Value::Object(update(&[
                "key_1",
                "--credits",
                "500",
                "--refill",
                "monthly:500@15"
            ])),
            json!({"credits": {"remaining": 500, "refill": {"interval": "monthly", "amount": 500, "day": 15}}})
        );
        assert_eq!(
            Value::Object(update(&["key_1", "--no-credits"])),
            json!({"credits": null})
        );
        assert!(update(&["key_1"]).is_empty());
    }

    #[test]
    fn clearing_and_setting_the_same_field_is_refused() {
        for args in [
            ["key_1", "--no-rate-limit", "--rate-limit", "1/1s"],
            ["key_1", "--no-expiry", "--expires-in", "1d"],
            ["key_1", "--clear-permissions", "--permission", "a:b"],
            ["key_1", "--no-credits", "--credits", "1"],
            ["key_1", "--refill", "daily:1", "--no-expiry"],
        ] {
            assert!(
                Update::try_parse_from(std::iter::once("update").chain(args)).is_err(),
                "{args:?} accepted"
            );
        }
    }

    #[test]
    fn expiry_from_now_is_rfc3339_in_the_future() {
        let at = from_now(3600).unwrap();
        let parsed =
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert!(parsed > time::OffsetDateTime::now_utc());
    }
}
