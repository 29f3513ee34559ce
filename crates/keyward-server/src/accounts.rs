//! Creating an account with everything it needs to be used at once: the
//! owner, a first workspace with the default environments, and a management
//! token holding every account permission. `keyward init` and
//! `keyward account create` both come here.

use crate::secrets;
use keyward_core::{
    DEFAULT_ENVIRONMENTS, EnvTag, InvalidValue, KeyFormat, KeyKind, Secret, normalize_email,
    validate_display_name, validate_password,
};
use keyward_store::{NewAccount, NewKey, Store, StoreError};

pub struct AccountSetup {
    pub account_name: String,
    pub owner_email: String,
    pub owner_password: zeroize::Zeroizing<String>,
    pub workspace_name: String,
}

/// What the operator needs to start using the new account. The token's
/// secret is shown once, here.
#[derive(Debug)]
pub struct CreatedAccount {
    pub account_id: String,
    pub user_id: String,
    pub member_id: String,
    pub workspace_id: String,
    pub management_token: Secret,
    /// The first workspace's primary credentials: Site ID and secret.
    pub primary_site_id: String,
    pub primary_secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{field}: {source}")]
    Invalid {
        field: &'static str,
        source: InvalidValue,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not hash the password: {0}")]
    Hashing(String),
}

fn invalid(field: &'static str) -> impl FnOnce(InvalidValue) -> SetupError {
    move |source| SetupError::Invalid { field, source }
}

pub async fn create_account(
    store: &dyn Store,
    format: &KeyFormat,
    setup: AccountSetup,
) -> Result<CreatedAccount, SetupError> {
    validate_display_name(&setup.account_name).map_err(invalid("account name"))?;
    validate_display_name(&setup.workspace_name).map_err(invalid("workspace name"))?;
    let owner_email = normalize_email(&setup.owner_email).map_err(invalid("email"))?;
    validate_password(&setup.owner_password).map_err(invalid("password"))?;
    let password_hash = secrets::hash_password(&setup.owner_password)
        .map_err(|e| SetupError::Hashing(e.to_string()))?;
    let token = secrets::mint(format, &EnvTag::management());
    let (production, live) = DEFAULT_ENVIRONMENTS[0];
    let live = EnvTag::parse_environment_tag(live).map_err(invalid("environment tag"))?;
    let (primary, primary_secret) = primary_credentials(format, production, &live, None);
    let created = store
        .bootstrap_account(NewAccount {
            name: setup.account_name,
            owner_email,
            owner_password_hash: password_hash,
            workspace_name: setup.workspace_name,
            environments: DEFAULT_ENVIRONMENTS
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            token_name: "Created by keyward init".to_owned(),
            token_hash_hex: token.hash().to_hex(),
            token_hint: token.hint(),
            primary_key: Some(primary),
        })
        .await?;
    let primary_site_id = created
        .workspace
        .primary_key
        .map(|k| k.id)
        .unwrap_or_default();
    Ok(CreatedAccount {
        account_id: created.account.id,
        user_id: created.owner.user_id,
        member_id: created.owner.id,
        workspace_id: created.workspace.workspace.id,
        management_token: token,
        primary_site_id,
        primary_secret,
    })
}

/// Seed 000's default "primary" credentials of a new workspace: an ingest
/// key (a Site ID + secret pair) in the given environment. The store fills
/// in the workspace and creates it in the workspace's own transaction.
pub fn primary_credentials(
    format: &KeyFormat,
    environment: &str,
    tag: &EnvTag,
    created_by: Option<String>,
) -> (NewKey, Secret) {
    let secret = secrets::mint(format, tag);
    let key = NewKey {
        workspace_id: String::new(),
        environment: environment.to_owned(),
        kind: KeyKind::Ingest,
        name: "Primary".to_owned(),
        hash_hex: secret.hash().to_hex(),
        hint: secret.hint(),
        permissions: vec![],
        customer_id: None,
        rate_limit: None,
        allowed_ips: vec![],
        expires_at: None,
        meta: serde_json::Map::new(),
        created_by,
        allowed_origins: vec![],
        public_value: None,
        credits: None,
    };
    (key, secret)
}

/// Whether `account_id` is an account of this deployment: a typo in a
/// configured account must stop a process, not leave it refusing every key.
pub async fn exists(store: &dyn Store, account_id: &str) -> Result<bool, StoreError> {
    Ok(store
        .list_account_ids()
        .await?
        .iter()
        .any(|id| id == account_id))
}
