//! `keyward jobs …`: background jobs through the admin API: start a bulk
//! disable, revoke or rotation of a workspace's keys, or an export of
//! request logs; watch it; save a rotation's new secrets — which the server
//! hands out only encrypted to the age public key the job was started with
//! — or an export's file.

use crate::moment::parse_moment;
use crate::output::{fields, json_if_asked, table, text_or};
use crate::remote::{ApiArgs, ApiClient};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use keyward_core::parse_duration_seconds;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct JobsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// The account's jobs, newest first: kind, status, progress, outcome.
    List {
        /// At most this many jobs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start from the first job the account ran instead of the latest.
        #[arg(long)]
        oldest_first: bool,
    },
    /// One job: status, progress and what it did.
    Get {
        id: String,
        /// Wait until the job has finished; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Start a bulk operation on every key of a workspace matching the
    /// filters. It runs in the background: pass `--wait` to see it through.
    Start(StartArgs),
    /// Save the file an `export-logs` job wrote: gzip-compressed CSV or
    /// NDJSON, as the server sends it.
    Download {
        id: String,
        /// Where to write it (never over an existing file); `-` for
        /// standard output.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// The keys a `rotate-keys` job rotated and their new secrets, each
    /// encrypted to the job's age recipient.
    Secrets {
        id: String,
        /// Also write each encrypted secret to DIR/<key id>.age, for
        /// `age --decrypt -i IDENTITY FILE`. Existing files are never
        /// overwritten.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum JobKind {
    /// Disable the keys; `keyward keys enable` undoes it, key by key.
    DisableKeys,
    /// Revoke the keys for good. A workspace's last active ingest key is
    /// skipped, as when revoking one key.
    RevokeKeys,
    /// Give each active or inactive key a new secret, encrypted to
    /// `--recipient`; the old secret keeps working for `--grace`.
    RotateKeys,
    /// Write the request logs matching the filters (the workspace's, or the
    /// account's) to a file, newest first; `jobs download` saves it.
    ExportLogs,
}

impl JobKind {
    /// The API's name for it.
    fn name(self) -> &'static str {
        match self {
            Self::DisableKeys => "disable_keys",
            Self::RevokeKeys => "revoke_keys",
            Self::RotateKeys => "rotate_keys",
            Self::ExportLogs => "export_logs",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
    Ndjson,
}

#[derive(Args)]
struct StartArgs {
    kind: JobKind,
    /// The workspace whose keys it applies to (key jobs need one); for an
    /// export, only this workspace's logs.
    #[arg(long, env = "KEYWARD_WORKSPACE")]
    workspace: Option<String>,
    /// Only keys (or logs) of this environment.
    #[arg(long)]
    environment: Option<String>,
    /// export-logs: only this key's logs.
    #[arg(long)]
    key: Option<String>,
    /// export-logs: only this outcome (`valid`, `rate_limited`…).
    #[arg(long)]
    code: Option<String>,
    /// export-logs: only logs since then: a time ago (`7d`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_moment)]
    since: Option<String>,
    /// export-logs: only logs before then.
    #[arg(long, value_parser = parse_moment)]
    until: Option<String>,
    /// export-logs: the file's format (gzip-compressed either way).
    #[arg(long, value_enum)]
    format: Option<ExportFormat>,
    /// Only keys in this status: active, inactive, expired or revoked.
    #[arg(long)]
    status: Option<String>,
    /// rotate-keys: how long each replaced secret keeps working (`0s` to
    /// `7d`; a day unless given).
    #[arg(long, value_parser = parse_duration_seconds)]
    grace: Option<u64>,
    /// rotate-keys: the age X25519 public key (`age1…`, as `age-keygen`
    /// prints it) to encrypt each new secret to. Keep its identity safe:
    /// nobody else, Keyward included, can read the new secrets.
    #[arg(long)]
    recipient: Option<String>,
    /// Wait until the job has finished; exit 1 if it failed.
    #[arg(long)]
    wait: bool,
}

impl StartArgs {
    /// The request body. Which fields an operation takes is the API's to
    /// decide: a flag it does not take comes back as a problem naming it.
    fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("kind".into(), json!(self.kind.name()));
        let format = self.format.map(|format| match format {
            ExportFormat::Csv => json!("csv"),
            ExportFormat::Ndjson => json!("ndjson"),
        });
        let optional = [
            ("workspace_id", self.workspace.as_ref().map(|w| json!(w))),
            ("environment", self.environment.as_ref().map(|e| json!(e))),
            ("status", self.status.as_ref().map(|s| json!(s))),
            ("grace_seconds", self.grace.map(|g| json!(g))),
            ("recipient", self.recipient.as_ref().map(|r| json!(r))),
            ("key_id", self.key.as_ref().map(|k| json!(k))),
            ("code", self.code.as_ref().map(|c| json!(c))),
            ("from", self.since.as_ref().map(|t| json!(t))),
            ("to", self.until.as_ref().map(|t| json!(t))),
            ("format", format),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                body.insert(name.into(), value);
            }
        }
        Value::Object(body)
    }
}

pub async fn run(args: JobsArgs) -> Result<ExitCode> {
    let api = args.api.client()?;
    let json = args.api.json;
    let (job, wait) = match args.command {
        JobsCommand::List {
            limit,
            oldest_first,
        } => return list(&api, json, limit, oldest_first).await,
        JobsCommand::Secrets { id, out_dir } => {
            return secrets(&api, json, &id, out_dir.as_deref()).await;
        }
        JobsCommand::Download { id, output } => return download(&api, &id, &output).await,
        JobsCommand::Get { id, wait } => (api.get(api.url(&["jobs", &id])?).await?, wait),
        JobsCommand::Start(start) => (
            api.post(api.url(&["jobs"])?, &start.body()).await?,
            start.wait,
        ),
    };
    let job = if wait {
        until_finished(&api, job).await?
    } else {
        job
    };
    if !json_if_asked(json, &job) {
        print_job(&job);
    }
    Ok(match job["status"].as_str() {
        Some("failed") => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

async fn list(api: &ApiClient, json: bool, limit: usize, oldest_first: bool) -> Result<ExitCode> {
    let mut url = api.url(&["jobs"])?;
    let order = if oldest_first { "asc" } else { "desc" };
    url.query_pairs_mut().append_pair("order", order);
    let jobs = api.list(url, limit).await?;
    if !json_if_asked(json, &Value::Array(jobs.clone())) {
        print_job_table(&jobs);
    }
    Ok(ExitCode::SUCCESS)
}

async fn secrets(
    api: &ApiClient,
    json: bool,
    id: &str,
    out_dir: Option<&Path>,
) -> Result<ExitCode> {
    let secrets = api
        .list(api.url(&["jobs", id, "secrets"])?, usize::MAX)
        .await?;
    if let Some(dir) = out_dir {
        save_secrets(dir, &secrets)?;
    }
    if !json_if_asked(json, &Value::Array(secrets.clone())) {
        print_secret_table(&secrets);
    }
    Ok(ExitCode::SUCCESS)
}

/// Saves an export's file to `output` (`-`: standard output). A transfer
/// that breaks off leaves no file: half of one would pass for the whole.
async fn download(api: &ApiClient, id: &str, output: &Path) -> Result<ExitCode> {
    let url = api.url(&["jobs", id, "export"])?;
    if output.as_os_str() == "-" {
        api.download(url, &mut std::io::stdout().lock()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut file = new_file(output, "--output")?;
    let written = api.download(url, &mut file).await;
    if written.is_err() {
        drop(file);
        let _ = std::fs::remove_file(output);
    }
    eprintln!(
        "Wrote {} bytes to {} (gzip: zcat it, or gunzip it once named *.gz)",
        written?,
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn is_finished(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed"))
}

/// Polls the job until it has succeeded or failed, saying on standard
/// error how far it got whenever that changes. Polls quickly at first (most
/// jobs take well under a second) and then every two seconds.
async fn until_finished(api: &ApiClient, mut job: Value) -> Result<Value> {
    let id = job["id"]
        .as_str()
        .context("the API answered a job without an id")?
        .to_owned();
    let url = api.url(&["jobs", &id])?;
    let mut pause = Duration::from_millis(100);
    let mut said = String::new();
    while !is_finished(&job) {
        let now = progress(&job);
        if now != said {
            eprintln!("{id}: {now}");
            said = now;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        job = api.get(url.clone()).await?;
    }
    Ok(job)
}

/// `running, 40/100 keys`: the status and, once counted, the work done.
fn progress(job: &Value) -> String {
    let status = text_or(&job["status"], "?");
    let done = &job["progress"]["done"];
    match job["progress"]["total"].as_u64() {
        Some(total) => format!("{status}, {done}/{total} keys"),
        None => status,
    }
}

fn print_job(job: &Value) {
    let mut lines = vec![
        ("id", text_or(&job["id"], "")),
        ("kind", text_or(&job["kind"], "")),
        ("status", progress(job)),
        ("started", text_or(&job["started_at"], "not yet")),
        ("finished", text_or(&job["finished_at"], "not yet")),
    ];
    if let Some(error) = job["error"].as_str() {
        lines.push(("error", error.to_owned()));
    }
    let result = &job["result"];
    for (name, count) in counts(result) {
        lines.push((name, count.to_string()));
    }
    println!("{}", fields(&lines));
    for skipped in result["skipped"].as_array().into_iter().flatten() {
        println!(
            "  skipped {}: {}",
            text_or(&skipped["key_id"], "?"),
            text_or(&skipped["reason"], "")
        );
    }
    if job["kind"] == "rotate_keys" && job["status"] == "succeeded" {
        let id = text_or(&job["id"], "ID");
        println!("\nThe new secrets: keyward jobs secrets {id} --out-dir DIR");
    }
}

/// The counts a finished job's result holds: the keys it matched, then
/// those it changed (`changed`, or `rotated` for a rotation) and skipped.
fn counts(result: &Value) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = ["matched", "changed", "rotated"]
        .into_iter()
        .filter_map(|name| Some((name, result[name].as_u64()?)))
        .collect();
    if let Some(skipped) = result["skipped"].as_array() {
        counts.push(("skipped", skipped.len() as u64));
    }
    counts
}

fn print_job_table(jobs: &[Value]) {
    if jobs.is_empty() {
        println!("No jobs yet.");
        return;
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let outcome = match job["error"].as_str() {
                Some(error) => error.to_owned(),
                None => counts(&job["result"])
                    .into_iter()
                    .map(|(name, count)| format!("{count} {name}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            vec![
                text_or(&job["id"], ""),
                text_or(&job["kind"], ""),
                progress(job),
                text_or(&job["created_at"], ""),
                outcome,
            ]
        })
        .collect();
    let headers = ["ID", "KIND", "STATUS", "CREATED", "OUTCOME"];
    println!("{}", table(&headers, &rows));
}

fn print_secret_table(secrets: &[Value]) {
    if secrets.is_empty() {
        println!("No secrets: the job rotated no key (yet).");
        return;
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            vec![
                text_or(&s["key_id"], ""),
                text_or(&s["name"], ""),
                text_or(&s["hint"], ""),
                text_or(&s["old_secret_expires_at"], ""),
            ]
        })
        .collect();
    let headers = ["KEY", "NAME", "NEW SECRET", "OLD SECRET WORKS UNTIL"];
    println!("{}", table(&headers, &rows));
}

/// Writes each ciphertext to `dir/<key id>.age`. The key id becomes a file
/// name, so it must look like one of ours: a server answering `../x` must
/// not write outside `dir`.
fn save_secrets(dir: &Path, secrets: &[Value]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out-dir: creating {}", dir.display()))?;
    for secret in secrets {
        let key_id = secret["key_id"].as_str().unwrap_or_default();
        let plausible = !key_id.is_empty()
            && key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plausible {
            bail!("the API answered a secret for {key_id:?}, which is not a key id");
        }
        let ciphertext = secret["ciphertext"]
            .as_str()
            .with_context(|| format!("the API answered no ciphertext for {key_id}"))?;
        let path = dir.join(format!("{key_id}.age"));
        let mut file = new_file(&path, "--out-dir")?;
        file.write_all(ciphertext.as_bytes())
            .with_context(|| format!("--out-dir: writing {}", path.display()))?;
    }
    eprintln!(
        "Wrote {} encrypted secret(s) to {}; read one with: age --decrypt -i IDENTITY FILE",
        secrets.len(),
        dir.display()
    );
    Ok(())
}

/// Creates `path`, refusing to replace a file already there: a download or
/// a secret must not overwrite what the user kept.
fn new_file(path: &Path, flag: &str) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("{flag}: creating {}", path.display()))
}
