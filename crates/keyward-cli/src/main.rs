//! `keyward`: run the server and administer a deployment.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use keyward_core::KeyFormat;
use keyward_server::Server;
use keyward_server::accounts::{AccountSetup, CreatedAccount, create_account};
use keyward_store::Store;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

/// Keyward issues API keys for your platform's customers and verifies them on
/// every request.
///
/// Start with `keyward init --email you@example.com`, then `keyward serve`.
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
    Serve {
        /// Address to listen on; port 0 picks a free port (the log says which).
        #[arg(long, env = "KEYWARD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Create the first account, its owner, a workspace and a management token.
    Init(AccountArgs),
    /// Manage accounts (tenants) of this deployment.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate,
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

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let format =
        KeyFormat::new(&cli.key_prefix).map_err(|e| anyhow::anyhow!("--key-prefix: {e}"))?;
    match cli.command {
        Command::Serve { listen } => serve(&cli.database_url, format, listen).await,
        Command::Init(args) => {
            let store = open_store(&cli.database_url).await?;
            if store.count_accounts().await? > 0 {
                bail!(
                    "this deployment is already initialised; add tenants with `keyward account create`"
                );
            }
            new_account(store.as_ref(), &format, args).await
        }
        Command::Account(AccountCommand::Create(args)) => {
            let store = open_store(&cli.database_url).await?;
            new_account(store.as_ref(), &format, args).await
        }
        Command::Migrate => {
            let store = open_store(&cli.database_url).await?;
            eprintln!("migrations applied ({})", store.backend());
            Ok(())
        }
    }
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

/// Database URLs may carry a password; never print it.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://…@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn serve(database_url: &str, format: KeyFormat, listen: SocketAddr) -> Result<()> {
    let store = open_store(database_url).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, store = store.backend(), "keyward listening on http://{address}");
    Server::new(store, format)
        .serve(listener, shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
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
    println!(
        "Try it:  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/v1/workspaces"
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
