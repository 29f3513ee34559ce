//! `keyward allowlist …`: the account's IP allowlist (seed 001). Each entry
//! is an address or range and the workspaces it grants; a workspace with
//! entries refuses every request from an address not on its list, even
//! with a valid key.

use crate::output::{json_if_asked, list_or, table, text_or};
use crate::remote::ApiArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct AllowlistArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: AllowlistCommand,
}

#[derive(Subcommand)]
enum AllowlistCommand {
    /// Every entry: address, the workspaces it grants, description.
    List,
    /// Allow an address (`203.0.113.7`) or range (`10.0.0.0/8`, IPv6 too)
    /// to reach workspaces. From then on those workspaces refuse every
    /// address not on their list.
    Add {
        address: String,
        /// A workspace it grants (repeat or comma-separate).
        #[arg(long = "workspace", value_delimiter = ',', required = true)]
        workspaces: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove an entry; a workspace left without entries is open again.
    Remove { id: String },
}

pub async fn run(args: AllowlistArgs) -> Result<()> {
    let api = args.api.client()?;
    let json = args.api.json;
    match args.command {
        AllowlistCommand::List => {
            let entries = api.list(api.url(&["ip-allowlist"])?, usize::MAX).await?;
            if !json_if_asked(json, &Value::Array(entries.clone())) {
                if entries.is_empty() {
                    println!("No entries: every workspace accepts any address.");
                    return Ok(());
                }
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            text_or(&e["id"], ""),
                            text_or(&e["address"], ""),
                            list_or(&e["workspace_ids"], "none"),
                            text_or(&e["description"], ""),
                        ]
                    })
                    .collect();
                let headers = ["ID", "ADDRESS", "WORKSPACES", "DESCRIPTION"];
                println!("{}", table(&headers, &rows));
            }
        }
        AllowlistCommand::Add {
            address,
            workspaces,
            description,
        } => {
            let mut body = Map::new();
            body.insert("address".into(), json!(address));
            body.insert("workspace_ids".into(), json!(workspaces));
            if let Some(description) = description {
                body.insert("description".into(), json!(description));
            }
            let created = api
                .post(api.url(&["ip-allowlist"])?, &Value::Object(body))
                .await?;
            if !json_if_asked(json, &created) {
                println!(
                    "Added {} ({}) for {}: those workspaces now refuse addresses not on their list.",
                    text_or(&created["address"], &address),
                    text_or(&created["id"], "?"),
                    list_or(&created["workspace_ids"], "no workspace"),
                );
            }
        }
        AllowlistCommand::Remove { id } => {
            api.delete(api.url(&["ip-allowlist", &id])?, None).await?;
            if !json_if_asked(json, &json!({ "removed": id })) {
                println!("Removed {id}.");
            }
        }
    }
    Ok(())
}
