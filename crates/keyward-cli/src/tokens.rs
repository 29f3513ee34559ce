//! `keyward tokens …`: management tokens, the bearer credentials scripts
//! and services use for the admin API and `POST /v1/verify`. Each acts for
//! one member and never holds more than that member does.

use crate::keys::from_now;
use crate::output::{self, json_if_asked, list_or, table, text_or};
use crate::remote::ApiArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use keyward_core::parse_duration_seconds;
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct TokensArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// List the account's tokens: what each may do, for whom, last use.
    List,
    /// Create a token; it is printed once.
    Create {
        name: String,
        /// What it may do: keys:verify, manage_api_credentials,
        /// manage_members (repeat or comma-separate).
        #[arg(long = "permission", value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// The member it acts for (`mem_…`); yourself by default.
        #[arg(long)]
        member: Option<String>,
        /// How long it works (`90d`, `12h`). Without it, the token does not
        /// expire: revoke it when it is no longer needed.
        #[arg(long, value_parser = parse_duration_seconds)]
        expires_in: Option<u64>,
    },
    /// Revoke a token: requests with it are refused at once.
    Revoke { id: String },
}

pub async fn run(args: TokensArgs) -> Result<()> {
    let api = args.api.client()?;
    let json = args.api.json;
    match args.command {
        TokensCommand::List => {
            let tokens = api
                .list(api.url(&["management-tokens"])?, usize::MAX)
                .await?;
            if !json_if_asked(json, &Value::Array(tokens.clone())) {
                let rows: Vec<Vec<String>> = tokens.iter().map(row).collect();
                let headers = [
                    "ID",
                    "NAME",
                    "HINT",
                    "MEMBER",
                    "MAY DO",
                    "LAST USED",
                    "EXPIRES",
                ];
                println!("{}", table(&headers, &rows));
            }
        }
        TokensCommand::Create {
            name,
            permissions,
            member,
            expires_in,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("permissions".into(), json!(permissions));
            if let Some(member) = member {
                body.insert("member_id".into(), json!(member));
            }
            if let Some(seconds) = expires_in {
                body.insert("expires_at".into(), json!(from_now(seconds)?));
            }
            let created = api
                .post(api.url(&["management-tokens"])?, &Value::Object(body))
                .await?;
            if !json_if_asked(json, &created) {
                let token = &created["token"];
                println!(
                    "Created token {} ({}), which may do: {}; expires: {}.",
                    text_or(&token["name"], &name),
                    text_or(&token["id"], "?"),
                    list_or(&token["permissions"], "nothing"),
                    text_or(&token["expires_at"], "never"),
                );
                output::secret("Token", &created["secret"]);
            }
        }
        TokensCommand::Revoke { id } => {
            api.delete(api.url(&["management-tokens", &id])?, None)
                .await?;
            if !json_if_asked(json, &json!({ "revoked": id })) {
                println!("Revoked {id}: requests with it are refused from now on.");
            }
        }
    }
    Ok(())
}

fn row(token: &Value) -> Vec<String> {
    vec![
        text_or(&token["id"], ""),
        text_or(&token["name"], ""),
        text_or(&token["hint"], ""),
        text_or(&token["member_id"], ""),
        list_or(&token["permissions"], "nothing"),
        text_or(&token["last_used_at"], "never"),
        text_or(&token["expires_at"], "never"),
    ]
}
