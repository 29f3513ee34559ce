//! `keyward members …`: the people of the account, their roles and grants
//! (seed 001: only owners, admins and members granted
//! `manage_api_credentials` may see or change credentials).

use crate::output::{json_if_asked, list_or, table, text_or};
use crate::remote::ApiArgs;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Args)]
pub struct MembersArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: MembersCommand,
}

#[derive(Subcommand)]
enum MembersCommand {
    /// The account's members: email, role, what each may do.
    List,
    /// Add a person. Someone new to Keyward gets a one-time invitation
    /// link (valid 7 days) to choose a password: pass it on.
    Add {
        email: String,
        /// owner, admin or member (only owners add owners).
        #[arg(long, default_value = "member")]
        role: String,
        /// A plain member's grant, e.g. manage_api_credentials (repeat or
        /// comma-separate).
        #[arg(long = "permission", value_delimiter = ',')]
        permissions: Vec<String>,
    },
    /// Change a member's role or grants; their tokens follow at once.
    Update {
        id: String,
        #[arg(long)]
        role: Option<String>,
        /// Replaces the grants (repeat or comma-separate).
        #[arg(long = "permission", value_delimiter = ',')]
        permissions: Vec<String>,
        /// Take every grant away.
        #[arg(long, conflicts_with = "permissions")]
        no_permissions: bool,
    },
    /// Remove a member: their sessions and tokens end at once.
    Remove { id: String },
}

pub async fn run(args: MembersArgs) -> Result<()> {
    let api = args.api.client()?;
    let json = args.api.json;
    match args.command {
        MembersCommand::List => {
            let members = api.list(api.url(&["members"])?, usize::MAX).await?;
            if !json_if_asked(json, &Value::Array(members.clone())) {
                let rows: Vec<Vec<String>> = members.iter().map(row).collect();
                println!("{}", table(&["ID", "EMAIL", "ROLE", "MAY DO"], &rows));
            }
        }
        MembersCommand::Add {
            email,
            role,
            permissions,
        } => {
            let body = json!({"email": email, "role": role, "permissions": permissions});
            let created = api.post(api.url(&["members"])?, &body).await?;
            if !json_if_asked(json, &created) {
                println!(
                    "Added {} ({}) as {}.",
                    text_or(&created["email"], &email),
                    text_or(&created["id"], "?"),
                    text_or(&created["role"], &role)
                );
                if let Some(path) = created["invitation"]["path"].as_str() {
                    println!(
                        "They choose a password at https://<your Keyward server>{path} (shown once; until {}).",
                        text_or(&created["invitation"]["expires_at"], "?")
                    );
                }
            }
        }
        MembersCommand::Update {
            id,
            role,
            permissions,
            no_permissions,
        } => {
            let mut body = Map::new();
            if let Some(role) = role {
                body.insert("role".into(), json!(role));
            }
            if no_permissions || !permissions.is_empty() {
                body.insert("permissions".into(), json!(permissions));
            }
            if body.is_empty() {
                bail!("nothing to change: pass --role, --permission or --no-permissions");
            }
            let updated = api
                .patch(api.url(&["members", &id])?, &Value::Object(body))
                .await?;
            if !json_if_asked(json, &updated) {
                println!(
                    "{} is now {}, and may do: {}.",
                    text_or(&updated["email"], &id),
                    text_or(&updated["role"], "?"),
                    list_or(&updated["effective_permissions"], "nothing")
                );
            }
        }
        MembersCommand::Remove { id } => {
            api.delete(api.url(&["members", &id])?, None).await?;
            if !json_if_asked(json, &json!({ "removed": id })) {
                println!("Removed {id}: their sessions and tokens no longer work.");
            }
        }
    }
    Ok(())
}

fn row(member: &Value) -> Vec<String> {
    vec![
        text_or(&member["id"], ""),
        text_or(&member["email"], ""),
        text_or(&member["role"], ""),
        list_or(&member["effective_permissions"], "nothing"),
    ]
}
