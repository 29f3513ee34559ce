//! Creating an account with everything it needs to be used at once: the
//! owner, a first workspace with the default environments, and a management
//! token holding every account permission. `keyward init` and
//! `keyward account create` both come here.

use crate::secrets;
use keyward_core::{
    DEFAULT_ENVIRONMENTS, EnvTag, InvalidValue, KeyFormat, Secret, normalize_email,
    validate_display_name, validate_password,
};
use keyward_store::{NewAccount, Store, StoreError};

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
        })
        .await?;
    Ok(CreatedAccount {
        account_id: created.account.id,
        user_id: created.owner.user_id,
        member_id: created.owner.id,
        workspace_id: created.workspace.workspace.id,
        management_token: token,
    })
}
