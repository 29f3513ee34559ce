//! `POST /v1/secret-scanning/github`: GitHub's secret scanning partner
//! alerts. No management token: the alert is trusted once its signature is
//! (see [`crate::secret_scanning`]). Each match that is a secret this
//! deployment issued is acted on in the store — a key revoked (or flagged,
//! or its replaced secret stopped), a management token deleted — and
//! answered `true_positive`; anything else is `false_positive`. A token
//! in another format is looked up as an imported key's secret when the
//! deployment takes imported keys. The answer
//! names each match by its SHA-256, never echoing a secret.

use crate::AppState;
use crate::auth::peer_ip;
use crate::extract::{RawBody, parse_json};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use crate::telemetry as m;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use keyward_core::key::could_be_imported_secret;
use keyward_core::{EnvTag, KeyHash};
use keyward_store::{Actor, LeakReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One secret GitHub found. No `Debug`: the token is a live secret.
#[derive(Deserialize, ToSchema)]
pub struct GithubMatch {
    /// The secret found.
    token: String,
    /// The name of the pattern that matched, as agreed with GitHub.
    #[serde(rename = "type")]
    token_type: String,
    /// The public URL it was found at (may be empty).
    #[serde(default)]
    url: Option<String>,
    /// Where on GitHub: `content`, `commit`, `pull_request_description`,
    /// `gist_content`, `npm`, ….
    #[serde(default)]
    source: Option<String>,
}

/// GitHub's label for a match.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLabel {
    /// SHA-256 (hex) of the match's token.
    token_hash: String,
    token_type: String,
    /// `true_positive` for a secret this deployment issued (whatever its
    /// state), `false_positive` for anything else.
    label: Label,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    TruePositive,
    FalsePositive,
}

/// Receives GitHub's secret scanning alerts (enabled with
/// `keyward serve --github-secret-scanning`).
#[utoipa::path(post, operation_id = "receiveGithubSecretAlerts", path = "/v1/secret-scanning/github", tag = "secret-scanning",
    security(()),
    params(
        ("GitHub-Public-Key-Identifier" = String, Header, description = "The GitHub key the alert is signed with"),
        ("GitHub-Public-Key-Signature" = String, Header, description = "Base64 DER ECDSA P-256 signature of the body"),
    ),
    request_body = Vec<GithubMatch>,
    responses((status = 200, body = Vec<GithubLabel>), (status = 400, body = ProblemDocument),
        (status = 401, body = ProblemDocument, description = "The signature is missing, or not GitHub's."),
        (status = 404, body = ProblemDocument, description = "This deployment does not take GitHub's alerts (`--github-secret-scanning`)."),
        (status = 503, body = ProblemDocument)))]
pub async fn github(
    State(state): State<AppState>,
    parts: Parts,
    RawBody(body): RawBody,
) -> ApiResult<Json<Vec<GithubLabel>>> {
    let Some(keys) = &state.github_keys else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "secret_scanning_disabled",
            "this deployment does not take GitHub's secret scanning alerts; start it with --github-secret-scanning",
        ));
    };
    keys.check_signature(&parts.headers, &body).await?;
    let matches: Vec<GithubMatch> = parse_json(&body)?;
    let actor = Actor {
        ip: peer_ip(&parts).map(|ip| ip.to_string()),
        ..Actor::system()
    };
    let mut labels = Vec::with_capacity(matches.len());
    for found in matches {
        let label = act_on(&state, &actor, &found).await?;
        metrics::counter!(m::LEAK_ALERTS, "label" => label.as_str()).increment(1);
        labels.push(GithubLabel {
            token_hash: KeyHash::of(&found.token).to_hex(),
            token_type: found.token_type,
            label,
        });
    }
    Ok(Json(labels))
}

async fn act_on(state: &AppState, actor: &Actor, found: &GithubMatch) -> Result<Label, Problem> {
    let report = |hash: KeyHash| LeakReport {
        hash_hex: hash.to_hex(),
        reporter: "github".into(),
        location: found.url.clone().filter(|url| !url.is_empty()),
        found_in: found.source.clone().filter(|source| !source.is_empty()),
    };
    let account = match state.format.parse(&found.token) {
        Ok(parsed) if parsed.env_tag() == EnvTag::MANAGEMENT => {
            let token = state
                .store
                .report_leaked_token(actor, report(parsed.hash()))
                .await?;
            token.map(|t| t.account_id)
        }
        Ok(parsed) => {
            let leak = state
                .store
                .report_leaked_key(actor, report(parsed.hash()))
                .await?;
            leak.map(|l| l.account_id)
        }
        // A key imported from another system, in that system's format.
        Err(_) if state.accept_imported_keys && could_be_imported_secret(&found.token) => {
            let hash = KeyHash::of(&found.token);
            let leak = state.store.report_leaked_key(actor, report(hash)).await?;
            leak.map(|l| l.account_id)
        }
        Err(_) => None,
    };
    let Some(account) = account else {
        return Ok(Label::FalsePositive);
    };
    // In effect on this node before GitHub hears back; other nodes follow
    // the change feed.
    state.verifier.cache().invalidate_account(&account);
    Ok(Label::TruePositive)
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::TruePositive => "true_positive",
            Label::FalsePositive => "false_positive",
        }
    }
}
