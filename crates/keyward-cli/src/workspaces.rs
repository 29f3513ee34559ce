//! `keyward workspaces …`: the containers keys are issued into.

use crate::output::{self, fields, json_if_asked, table, text_or};
use crate::remote::ApiArgs;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub struct WorkspacesArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: WorkspacesCommand,
}

#[derive(Subcommand)]
enum WorkspacesCommand {
    /// List the account's workspaces.
    List {
        /// At most this many workspaces (the list is read page by page).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show a workspace and its environments.
    Get { id: String },
    /// Create a workspace with the environments production, staging and
    /// development. Its primary ingest credentials are printed once.
    Create { name: String },
    /// Rename a workspace.
    Rename { id: String, name: String },
    /// Delete a workspace with its environments and every key in it. Asks
    /// for the workspace's name first, or takes it from `--confirm-name`.
    Delete {
        id: String,
        /// The workspace's name, repeated, for use without a terminal.
        #[arg(long)]
        confirm_name: Option<String>,
    },
}

pub async fn run(args: WorkspacesArgs) -> Result<()> {
    let api = args.api.client()?;
    let json = args.api.json;
    match args.command {
        WorkspacesCommand::List { limit } => {
            let workspaces = api.list(api.url(&["workspaces"])?, limit).await?;
            if !json_if_asked(json, &Value::Array(workspaces.clone())) {
                let rows: Vec<Vec<String>> = workspaces
                    .iter()
                    .map(|w| {
                        vec![
                            text_or(&w["id"], ""),
                            text_or(&w["name"], ""),
                            text_or(&w["created_at"], ""),
                        ]
                    })
                    .collect();
                println!("{}", table(&["ID", "NAME", "CREATED"], &rows));
            }
        }
        WorkspacesCommand::Get { id } => {
            let workspace = api.get(api.url(&["workspaces", &id])?).await?;
            if !json_if_asked(json, &workspace) {
                print_workspace(&workspace);
            }
        }
        WorkspacesCommand::Create { name } => {
            let created = api
                .post(api.url(&["workspaces"])?, &json!({ "name": name }))
                .await?;
            if !json_if_asked(json, &created) {
                println!("Created workspace:");
                print_workspace(&created);
                let primary = &created["primary_credentials"];
                println!();
                println!(
                    "Primary ingest credentials, Site ID {}",
                    text_or(&primary["key"]["id"], "?")
                );
                output::secret("Secret", &primary["secret"]);
            }
        }
        WorkspacesCommand::Rename { id, name } => {
            let workspace = api
                .patch(api.url(&["workspaces", &id])?, &json!({ "name": name }))
                .await?;
            if !json_if_asked(json, &workspace) {
                println!(
                    "Renamed workspace {id} to {:?}.",
                    text_or(&workspace["name"], "")
                );
            }
        }
        WorkspacesCommand::Delete { id, confirm_name } => {
            let workspace = api.get(api.url(&["workspaces", &id])?).await?;
            let name = text_or(&workspace["name"], "");
            let typed = match confirm_name {
                Some(typed) => typed,
                None => output::ask_for_name("workspace", &name)?,
            };
            // The API deletes a workspace without a confirmation field, so
            // the check is made here, against the name just read.
            if typed != name {
                bail!("the name does not match {name:?}: nothing was deleted");
            }
            api.delete(api.url(&["workspaces", &id])?, None).await?;
            if !json_if_asked(json, &json!({ "deleted": id })) {
                println!("Deleted workspace {id} and its keys.");
            }
        }
    }
    Ok(())
}

fn print_workspace(workspace: &Value) {
    println!(
        "{}",
        fields(&[
            ("id", text_or(&workspace["id"], "")),
            ("name", text_or(&workspace["name"], "")),
            ("created", text_or(&workspace["created_at"], "")),
        ])
    );
    if let Some(environments) = workspace["environments"].as_array() {
        let rows: Vec<Vec<String>> = environments
            .iter()
            .map(|e| {
                vec![
                    format!("  {}", text_or(&e["name"], "")),
                    text_or(&e["tag"], ""),
                ]
            })
            .collect();
        println!();
        println!("{}", table(&["  ENVIRONMENT", "KEY TAG"], &rows));
    }
}
