//! `keyward`: run the server and administer a deployment.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use keyward_core::KeyFormat;
use keyward_core::gateway::RouteTable;
use keyward_server::accounts::{AccountSetup, CreatedAccount, create_account};
use keyward_server::gateway::{GatewayConfig, Upstream, UpstreamTls};
use keyward_server::secret_scanning::GithubPublicKeys;
use keyward_server::shared_limit::SharedLimits;
use keyward_server::{Server, ServerConfig};
use keyward_store::{AuditChainReport, ChainLink, Store};
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

mod allowlist;
mod audit;
mod jobs;
mod keys;
mod members;
mod moment;
mod output;
mod permissions;
mod remote;
mod scan;
mod tokens;
mod workspaces;

/// Keyward issues API keys for your platform's customers and verifies them on
/// every request.
///
/// Start with `keyward init --email you@example.com`, then `keyward serve`.
/// The `keys` and `workspaces` commands manage a running server through its
/// admin API (`KEYWARD_API_URL`, `KEYWARD_TOKEN`).
#[derive(Parser)]
#[command(name = "keyward", version, about, long_about)]
struct Cli {
    /// Where state lives: `sqlite://FILE` (created if missing) or `postgres://…`.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_DATABASE_URL",
        default_value = "sqlite://keyward.db"
    )]
    database_url: String,

    /// The prefix of every key this deployment issues (`kw_live_…`).
    #[arg(long, global = true, env = "KEYWARD_KEY_PREFIX", default_value = KeyFormat::DEFAULT_PREFIX)]
    key_prefix: String,

    /// Log format on standard error.
    #[arg(long, global = true, env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (admin API, verify API, health, OpenAPI).
    Serve(ServeArgs),
    /// Run the gateway: a reverse proxy in front of your own HTTP API that
    /// verifies each request's key before forwarding it.
    ///
    /// Routes (a TOML file) map method and path to the permissions a key
    /// needs; a request no route matches is refused. The credential is
    /// removed before forwarding, and the upstream receives the key's
    /// identity in `Keyward-Key-Id`, `Keyward-Workspace-Id`,
    /// `Keyward-Environment`, `Keyward-Customer-Id` and `Keyward-Client-Ip`
    /// (any `Keyward-*` header a client sends is dropped). Denials are
    /// RFC 9457 problems.
    Proxy(ProxyArgs),
    /// Create the first account, its owner, a workspace and a management token.
    Init(AccountArgs),
    /// Manage accounts (tenants) of this deployment.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate,
    /// Read the account's audit log, or check every account's hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Start bulk disable, revoke and rotate jobs, watch them, and save a
    /// rotation's encrypted new secrets, through a running server's admin
    /// API.
    Jobs(jobs::JobsArgs),
    /// Issue, list, rotate, disable, revoke and delete API keys through a
    /// running server's admin API.
    Keys(keys::KeysArgs),
    /// List, create, rename and delete workspaces through a running
    /// server's admin API.
    Workspaces(workspaces::WorkspacesArgs),
    /// List, add and remove the permissions keys may be given, through a
    /// running server's admin API.
    Permissions(permissions::PermissionsArgs),
    /// List, create and revoke management tokens (for scripts and services
    /// calling the API) through a running server's admin API.
    Tokens(tokens::TokensArgs),
    /// List, add and remove IP allowlist entries (which addresses may reach
    /// which workspaces) through a running server's admin API.
    Allowlist(allowlist::AllowlistArgs),
    /// List, add, update and remove the account's members and their
    /// permissions through a running server's admin API.
    Members(members::MembersArgs),
    /// Find this deployment's keys (by `--key-prefix`, checksum-confirmed)
    /// in files, standard input or a git repository's history. Prints each
    /// key's hint and place, never the key; exits 1 if any is found.
    Scan(scan::ScanArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The account's audit events, newest first, through a running
    /// server's admin API (needs the manage_members permission).
    Events(Box<audit::EventsArgs>),
    /// Recompute every account's audit hash chain and name the first broken
    /// link; exits non-zero if any chain is broken. Prints each chain's
    /// head (`SEQ:HASH`): kept outside Keyward and passed back with
    /// `--expect-head`, it also shows the newest events being removed,
    /// which the chain alone cannot.
    Verify {
        /// Check only this account.
        #[arg(long)]
        account: Option<String>,
        /// A head printed by an earlier run (`SEQ:HASH`): the chain must
        /// still hold that event, unchanged. Needs --account.
        #[arg(long, requires = "account", value_parser = parse_chain_link)]
        expect_head: Option<ChainLink>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "KEYWARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    verify_path: VerifyPathArgs,
    /// Send console cookies without `Secure`: only for a console served
    /// over plain HTTP on an address other than localhost, inside a
    /// private network. Browsers accept secure cookies from localhost.
    #[arg(long, env = "KEYWARD_CONSOLE_INSECURE_COOKIES")]
    console_insecure_cookies: bool,
    /// A second address serving only `POST /v1/verify` (and `/healthz`)
    /// WITHOUT a management token, for the keys of `--verify-account`. Bind
    /// it where only your own services can reach it (loopback, a private
    /// network): anyone who reaches it can check keys of that account.
    #[arg(long, env = "KEYWARD_VERIFY_LISTEN", requires = "verify_account")]
    verify_listen: Option<SocketAddr>,
    /// The account whose keys the private verify listener checks.
    #[arg(long, env = "KEYWARD_VERIFY_ACCOUNT", requires = "verify_listen")]
    verify_account: Option<String>,
    /// Take GitHub's secret scanning alerts at
    /// `POST /v1/secret-scanning/github`: a key GitHub finds in public is
    /// revoked (a workspace's last ingest key only flagged), a management
    /// token deleted. The alerts' signatures are checked against the keys
    /// GitHub publishes, fetched when first needed.
    #[arg(long, env = "KEYWARD_GITHUB_SECRET_SCANNING")]
    github_secret_scanning: bool,
    /// Where GitHub publishes those keys (a GitHub Enterprise Server's
    /// `https://HOST/api/v3/meta/public_keys/secret_scanning`, say).
    #[arg(long, env = "KEYWARD_GITHUB_PUBLIC_KEYS_URL",
          default_value = keyward_server::secret_scanning::GITHUB_PUBLIC_KEYS_URL,
          requires = "github_secret_scanning")]
    github_public_keys_url: String,
}

/// How a node verifies keys: shared by `serve` and `proxy`.
#[derive(Args)]
struct VerifyPathArgs {
    /// Days request logs are kept before the hourly purge deletes them.
    #[arg(long, env = "KEYWARD_LOG_RETENTION_DAYS", default_value_t = 30)]
    log_retention_days: u32,
    /// Redis (`redis://host:6379`) for rate limits shared by every node;
    /// without it each node enforces each key's limit on its own.
    #[arg(long, env = "KEYWARD_REDIS_URL")]
    redis_url: Option<String>,
    /// API keys whose verification records stay cached in memory (LRU).
    #[arg(long, env = "KEYWARD_CACHE_CAPACITY", default_value_t = 100_000)]
    cache_capacity: usize,
    /// Seconds a cached key is trusted before it is read again (changes
    /// take effect at once anyway: this is the safety net).
    #[arg(long, env = "KEYWARD_CACHE_TTL_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    cache_ttl_seconds: u32,
    /// Seconds past its TTL a cached key still verifies while the store is
    /// unavailable (0: a store outage fails verification at once).
    #[arg(long, env = "KEYWARD_OUTAGE_GRACE_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(0..=86_400))]
    outage_grace_seconds: u32,
    /// Verify keys imported from another system by their hash
    /// (`POST /v1/workspaces/{id}/keys/import`): a credential not in
    /// Keyward's format is then looked up as such a key's secret, where it
    /// would otherwise be refused as malformed without a lookup. Every node
    /// of the deployment needs it.
    #[arg(long, env = "KEYWARD_ACCEPT_IMPORTED_KEYS")]
    accept_imported_keys: bool,
}

impl VerifyPathArgs {
    fn config(&self) -> Result<ServerConfig> {
        let mut config = ServerConfig {
            log_retention_days: self.log_retention_days,
            accept_imported_keys: self.accept_imported_keys,
            ..ServerConfig::default()
        };
        config.cache.key_capacity = self.cache_capacity;
        config.cache.ttl_ms = i64::from(self.cache_ttl_seconds) * 1000;
        config.cache.outage_grace_ms = i64::from(self.outage_grace_seconds) * 1000;
        if let Some(url) = &self.redis_url {
            let shared = SharedLimits::new(url, "keyward:ratelimit")
                .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
            config.shared_limits = Some(Arc::new(shared));
        }
        Ok(config)
    }
}

#[derive(Args)]
struct ProxyArgs {
    /// Address clients reach the gateway on; port 0 picks a free port (the
    /// log says which).
    #[arg(long, env = "KEYWARD_PROXY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The API behind the gateway: `http[s]://host:port[/base]`. An
    /// https:// upstream's certificate must name its host and be issued by
    /// an authority the system trusts (or `--upstream-ca`).
    #[arg(long, env = "KEYWARD_PROXY_UPSTREAM")]
    upstream: Upstream,
    /// A PEM file of the certificate authorities an https:// upstream's
    /// certificate must be issued by (your private CA), trusted instead of
    /// the system's.
    #[arg(long, env = "KEYWARD_PROXY_UPSTREAM_CA")]
    upstream_ca: Option<PathBuf>,
    /// The routes file (TOML): `[[route]]` tables of `method` (or "*"),
    /// `path` (`/orders/{id}`, `/files/{*rest}`), `permissions` and,
    /// optionally, where the request names its customer (`customer`, a path
    /// parameter, or `customer_header`); and an optional top-level
    /// `environment` the upstream serves.
    #[arg(long, env = "KEYWARD_PROXY_ROUTES")]
    routes: PathBuf,
    /// The account whose keys the gateway accepts.
    #[arg(long, env = "KEYWARD_PROXY_ACCOUNT")]
    account: String,
    /// Seconds the upstream may take to start answering (then 504).
    #[arg(long, env = "KEYWARD_PROXY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    upstream_timeout_seconds: u64,
    /// Your own proxies in front of the gateway (a TLS-terminating load
    /// balancer), as addresses or CIDR ranges, repeated or comma-separated.
    /// From them, the client's address (for IP allowlists and
    /// `Keyward-Client-Ip`) is the right-most `X-Forwarded-For` entry that
    /// is not one of them; from anyone else, the connection's own.
    #[arg(long = "trusted-proxy", env = "KEYWARD_PROXY_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = parse_trusted_proxy)]
    trusted_proxies: Vec<IpNet>,
    /// Also serve the admin API, `/metrics` and health on this address.
    #[arg(long, env = "KEYWARD_PROXY_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    #[command(flatten)]
    verify_path: VerifyPathArgs,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create another account, isolated from every other.
    Create(AccountArgs),
}

#[derive(Args)]
struct AccountArgs {
    /// The owner's email address.
    #[arg(long)]
    email: String,
    /// Read the owner's password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The account's name.
    #[arg(long, default_value = "My account")]
    account_name: String,
    /// The first workspace's name.
    #[arg(long, default_value = "Default workspace")]
    workspace_name: String,
    /// Print one JSON object {account_id, user_id, workspace_id, management_token}.
    #[arg(long)]
    json: bool,
}

/// mimalloc rather than glibc's malloc: every request allocates and frees
/// small buffers (headers, JSON, the request's strings) on whichever worker
/// runs it, and glibc's arenas took about an eighth of the server's CPU
/// under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let format =
        KeyFormat::new(&cli.key_prefix).map_err(|e| anyhow::anyhow!("--key-prefix: {e}"))?;
    let database_url = cli.database_url.as_str();
    match cli.command {
        Command::Keys(args) => return keys::run(args).await,
        Command::Scan(args) => return scan::run(&format, args),
        Command::Workspaces(args) => workspaces::run(args).await?,
        Command::Permissions(args) => permissions::run(args).await?,
        Command::Tokens(args) => tokens::run(args).await?,
        Command::Allowlist(args) => allowlist::run(args).await?,
        Command::Members(args) => members::run(args).await?,
        Command::Jobs(args) => return jobs::run(args).await,
        Command::Audit(AuditCommand::Events(args)) => audit::events(*args).await?,
        Command::Serve(args) => serve(database_url, format, args).await?,
        Command::Proxy(args) => proxy(database_url, format, args).await?,
        Command::Init(args) => {
            let store = open_store(database_url).await?;
            if store.count_accounts().await? > 0 {
                bail!(
                    "this deployment is already initialised; add tenants with `keyward account create`"
                );
            }
            new_account(store.as_ref(), &format, args).await?;
        }
        Command::Account(AccountCommand::Create(args)) => {
            let store = open_store(database_url).await?;
            new_account(store.as_ref(), &format, args).await?;
        }
        Command::Audit(AuditCommand::Verify {
            account,
            expect_head,
        }) => {
            let store = open_store(database_url).await?;
            verify_audit(store.as_ref(), account, expect_head).await?;
        }
        Command::Migrate => {
            let store = open_store(database_url).await?;
            eprintln!("migrations applied ({})", store.backend());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn open_store(url: &str) -> Result<Arc<dyn Store>> {
    keyward_store::open(url)
        .await
        .with_context(|| format!("opening the store at {}", redact_url(url)))
}

/// Prints one line per account checked; fails if any chain is broken, or
/// no longer holds the expected head.
async fn verify_audit(
    store: &dyn Store,
    only: Option<String>,
    expected: Option<ChainLink>,
) -> Result<()> {
    let accounts = store.list_account_ids().await?;
    let accounts = match only {
        Some(account) if accounts.contains(&account) => vec![account],
        Some(account) => bail!("no account {account} in this deployment"),
        None => accounts,
    };
    let mut broken = 0;
    for account in &accounts {
        let checkpoint = expected.as_ref().map(|link| link.seq);
        let report = store.verify_audit_chain(account, checkpoint).await?;
        match report.broken {
            None => {
                let head = report
                    .head
                    .as_ref()
                    .map_or("none".to_owned(), |h| format!("{}:{}", h.seq, h.hash));
                println!(
                    "{account}: {} events, chain intact; head {head}",
                    report.events
                );
                if let Some(expected) = &expected {
                    holds_expected_head(&report, expected)?;
                }
            }
            Some(link) => {
                broken += 1;
                println!(
                    "{account}: chain broken at event #{} ({}): {}",
                    link.seq, link.event_id, link.reason
                );
            }
        }
    }
    if broken > 0 {
        bail!(
            "{broken} of {} audit chains are broken: the audit log was changed outside Keyward",
            accounts.len()
        );
    }
    Ok(())
}

/// Whether an intact chain still holds the head recorded earlier: the
/// event is there (the newest events were not cut off) with the same hash
/// (nothing up to it was rewritten, the whole chain with it).
fn holds_expected_head(report: &AuditChainReport, expected: &ChainLink) -> Result<()> {
    let last = report.head.as_ref().map_or(0, |head| head.seq);
    match &report.checkpoint {
        None => bail!(
            "event #{} is gone: the chain now ends at #{last}, so its newest events were removed outside Keyward",
            expected.seq
        ),
        Some(found) if found.hash != expected.hash => bail!(
            "event #{} now has hash {}, not the recorded {}: the chain was rewritten up to it outside Keyward",
            expected.seq,
            found.hash,
            expected.hash
        ),
        Some(_) => {
            println!(
                "event #{} is still the recorded head's, unchanged",
                expected.seq
            );
            Ok(())
        }
    }
}

/// `SEQ:HASH` as `keyward audit verify` prints a head.
fn parse_chain_link(text: &str) -> Result<ChainLink, String> {
    let malformed = || format!("{text:?} is not SEQ:HASH as `keyward audit verify` prints a head");
    let (seq, hash) = text.split_once(':').ok_or_else(malformed)?;
    let seq = seq
        .parse::<i64>()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(malformed)?;
    let is_hash = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_hash {
        return Err(malformed());
    }
    Ok(ChainLink {
        seq,
        hash: hash.to_owned(),
    })
}

/// Database URLs may carry a password; never print it.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://…@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn serve(database_url: &str, format: KeyFormat, args: ServeArgs) -> Result<()> {
    let mut config = args.verify_path.config()?;
    config.secure_cookies = !args.console_insecure_cookies;
    if args.github_secret_scanning {
        // Certificate authorities only matter for an https:// URL (always,
        // but for a test double or a mirror on a private network).
        let tls = if args.github_public_keys_url.starts_with("http://") {
            UpstreamTls::trusting_nobody()
        } else {
            UpstreamTls::system()
        }
        .map_err(|e| anyhow::anyhow!("--github-secret-scanning: {e}"))?;
        let keys = GithubPublicKeys::new(&args.github_public_keys_url, &tls)
            .map_err(|e| anyhow::anyhow!("--github-public-keys-url: {e}"))?;
        config.github_secret_scanning = Some(Arc::new(keys));
        tracing::info!("taking GitHub's secret scanning alerts at /v1/secret-scanning/github");
    }
    let store = open_store(database_url).await?;
    let listener = bind(args.listen, "--listen").await?;
    let address = listener.local_addr()?;
    let mut server = Server::with_config(store.clone(), format, config);
    if let (Some(listen), Some(account)) = (args.verify_listen, &args.verify_account) {
        ensure_account(store.as_ref(), account, "--verify-account").await?;
        let listener = bind(listen, "--verify-listen").await?;
        let address = listener.local_addr()?;
        tracing::info!(
            %address,
            account,
            "private verify listener on http://{address}: verifies this account's keys without a token"
        );
        server = server.with_private_verify(listener, account);
    }
    tracing::info!(%address, store = store.backend(), "keyward listening on http://{address}");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn proxy(database_url: &str, format: KeyFormat, args: ProxyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.routes)
        .with_context(|| format!("--routes: reading {}", args.routes.display()))?;
    let routes = RouteTable::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("--routes {}: {e}", args.routes.display()))?;
    let upstream_tls = upstream_tls(&args.upstream, args.upstream_ca.as_deref())?;
    let config = args.verify_path.config()?;
    let store = open_store(database_url).await?;
    ensure_account(store.as_ref(), &args.account, "--account").await?;
    let listener = bind(args.listen, "--listen").await?;
    let address = listener.local_addr()?;
    let server = Server::with_config(store.clone(), format, config).with_gateway(
        listener,
        GatewayConfig {
            account_id: args.account.clone(),
            upstream: args.upstream,
            routes,
            upstream_timeout: Duration::from_secs(args.upstream_timeout_seconds),
            trusted_proxies: args.trusted_proxies,
            upstream_tls,
        },
    );
    tracing::info!(%address, account = args.account, store = store.backend(), "keyward gateway listening on http://{address}");
    match args.api_listen {
        Some(api) => {
            let api = bind(api, "--api-listen").await?;
            let address = api.local_addr()?;
            tracing::info!(%address, "keyward API listening on http://{address}");
            server.serve(api, shutdown_signal()).await?;
        }
        None => server.run(shutdown_signal()).await?,
    }
    tracing::info!("stopped");
    Ok(())
}

/// Whom the upstream's certificate must be issued by: the `--upstream-ca`
/// file's authorities, else the system's — and nobody for an http://
/// upstream, which a CA file would only mislead about.
fn upstream_tls(upstream: &Upstream, ca: Option<&Path>) -> Result<UpstreamTls> {
    match (upstream.is_https(), ca) {
        (false, None) => UpstreamTls::trusting_nobody().map_err(anyhow::Error::msg),
        (false, Some(_)) => {
            anyhow::bail!("--upstream-ca: the upstream is http://, so no certificate is checked")
        }
        (true, None) => UpstreamTls::system()
            .map_err(|e| anyhow::anyhow!("--upstream: {e}: install the system's CA bundle, or name the upstream's authority with --upstream-ca")),
        (true, Some(path)) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--upstream-ca: reading {}", path.display()))?;
            UpstreamTls::trusting_pem(&pem)
                .map_err(|e| anyhow::anyhow!("--upstream-ca {}: {e}", path.display()))
        }
    }
}

fn parse_trusted_proxy(s: &str) -> Result<IpNet, String> {
    keyward_core::ip::parse_rule(s.trim()).map_err(|e| e.message)
}

async fn bind(address: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("{flag}: binding {address}"))
}

/// A typo in an account id must stop the process, not leave a listener
/// that refuses every key.
async fn ensure_account(store: &dyn Store, account: &str, flag: &str) -> Result<()> {
    if keyward_server::accounts::exists(store, account).await? {
        Ok(())
    } else {
        bail!("{flag}: no account {account} in this deployment")
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or(());
}

async fn new_account(store: &dyn Store, format: &KeyFormat, args: AccountArgs) -> Result<()> {
    let password = read_password(args.password_stdin)?;
    let created = create_account(
        store,
        format,
        AccountSetup {
            account_name: args.account_name,
            owner_email: args.email.clone(),
            owner_password: password,
            workspace_name: args.workspace_name,
        },
    )
    .await?;
    if args.json {
        println!("{}", account_json(&created));
    } else {
        print_account(&created, &args.email);
    }
    Ok(())
}

/// From `--password-stdin`, `KEYWARD_OWNER_PASSWORD`, or a prompt on a terminal.
fn read_password(from_stdin: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(Zeroizing::new(
            line.trim_end_matches(['\r', '\n']).to_owned(),
        ));
    }
    if let Ok(password) = std::env::var("KEYWARD_OWNER_PASSWORD") {
        return Ok(Zeroizing::new(password));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password given: use --password-stdin, set KEYWARD_OWNER_PASSWORD, or run in a terminal"
        );
    }
    let first = Zeroizing::new(rpassword::prompt_password(
        "Owner password (12+ characters): ",
    )?);
    let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
    if first != again {
        bail!("the passwords differ");
    }
    Ok(first)
}

fn account_json(created: &CreatedAccount) -> serde_json::Value {
    serde_json::json!({
        "account_id": created.account_id,
        "user_id": created.user_id,
        "workspace_id": created.workspace_id,
        "management_token": created.management_token.expose(),
        "primary_site_id": created.primary_site_id,
        "primary_secret": created.primary_secret.expose(),
    })
}

fn print_account(created: &CreatedAccount, email: &str) {
    println!("Account {} created; owner {email}.", created.account_id);
    println!(
        "Workspace {} has the environments production, staging and development.",
        created.workspace_id
    );
    println!();
    println!("Management token (shown once — store it now):");
    println!();
    println!("    {}", created.management_token.expose());
    println!();
    println!("The workspace's primary ingest credentials (also shown once):");
    println!();
    println!("    Site ID  {}", created.primary_site_id);
    println!("    Secret   {}", created.primary_secret.expose());
    println!();
    println!(
        "Try it:  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/v1/workspaces"
    );
    println!(
        "Or run `keyward serve` and sign in to the console at http://127.0.0.1:8080/ as {email}."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/k"),
            "postgres://…@db:5432/k"
        );
        assert_eq!(redact_url("sqlite://keyward.db"), "sqlite://keyward.db");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
