//! `keyward permissions …`: the account's catalog of permissions, which
//! keys may only be given from.

use crate::output::{json_if_asked, table, text_or};
use crate::remote::ApiArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct PermissionsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: PermissionsCommand,
}

#[derive(Subcommand)]
enum PermissionsCommand {
    /// List the catalog.
    List,
    /// Add a permission (`resource:action`, such as `orders:read`).
    Create {
        name: String,
        /// What the permission allows, for the people issuing keys.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a permission from the catalog.
    Delete { name: String },
}

pub async fn run(args: PermissionsArgs) -> Result<()> {
    let api = args.api.client()?;
    let json = args.api.json;
    match args.command {
        PermissionsCommand::List => {
            let permissions = api.list(api.url(&["permissions"])?, usize::MAX).await?;
            if !json_if_asked(json, &Value::Array(permissions.clone())) {
                let rows: Vec<Vec<String>> = permissions
                    .iter()
                    .map(|p| vec![text_or(&p["name"], ""), text_or(&p["description"], "")])
                    .collect();
                println!("{}", table(&["NAME", "DESCRIPTION"], &rows));
            }
        }
        PermissionsCommand::Create { name, description } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if let Some(description) = description {
                body.insert("description".into(), json!(description));
            }
            let created = api
                .post(api.url(&["permissions"])?, &Value::Object(body))
                .await?;
            if !json_if_asked(json, &created) {
                println!("Added {} to the catalog.", text_or(&created["name"], &name));
            }
        }
        PermissionsCommand::Delete { name } => {
            api.delete(api.url(&["permissions", &name])?, None).await?;
            if !json_if_asked(json, &json!({ "deleted": name })) {
                println!("Removed {name} from the catalog.");
            }
        }
    }
    Ok(())
}
