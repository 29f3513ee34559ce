//! The verification engine: parse → look up → decide → rate-limit → record
//! use. The HTTP verify endpoint is a thin adapter over it, and so will be the
//! gateway and the embeddable library.

use crate::ratelimit::{RateLimitState, RateLimits};
use crate::usage::UsageBuffer;
use keyward_core::verify::{Code, Demand, KeyFacts, PresentedCredential, decide};
use keyward_core::{EnvTag, KeyFormat, PermissionName};
use keyward_store::{ApiKey, Store, StoreResult, VerificationRecord};
use std::net::IpAddr;
use std::sync::Arc;

/// What the platform asks about one of its requests.
#[derive(Debug)]
pub struct VerifyInput<'a> {
    /// The account the caller acts for: keys of any other account are unknown to it.
    pub account_id: &'a str,
    /// `None` when the client sent no credential the platform could read.
    pub credential: Option<PresentedCredential>,
    pub environment: Option<&'a str>,
    pub permissions: &'a [PermissionName],
    pub ip: Option<IpAddr>,
    pub customer_id: Option<&'a str>,
}

/// The outcome, with the key when the caller may see it (every outcome after
/// a successful lookup in the caller's own account).
#[derive(Debug)]
pub struct Verdict {
    pub code: Code,
    pub key: Option<ApiKey>,
    pub rate_limit: Option<RateLimitState>,
}

impl Verdict {
    fn without_key(code: Code) -> Self {
        Self {
            code,
            key: None,
            rate_limit: None,
        }
    }
}

pub struct Verifier {
    store: Arc<dyn Store>,
    format: KeyFormat,
    rate_limits: RateLimits,
    usage: Arc<UsageBuffer>,
}

impl Verifier {
    pub fn new(store: Arc<dyn Store>, format: KeyFormat, usage: Arc<UsageBuffer>) -> Self {
        Self {
            store,
            format,
            rate_limits: RateLimits::default(),
            usage,
        }
    }

    /// Runs every check of SPEC §3 in order. A store failure is an error, not
    /// a denial: the caller must not mistake an outage for a bad key.
    pub async fn verify(&self, input: VerifyInput<'_>, now_ms: i64) -> StoreResult<Verdict> {
        let Some(credential) = input.credential.as_ref() else {
            return Ok(Verdict::without_key(Code::MalformedKey));
        };
        let Ok(parsed) = self.format.parse(credential.expose_secret()) else {
            return Ok(Verdict::without_key(Code::MalformedKey));
        };
        if parsed.env_tag() == EnvTag::management().as_str() {
            // A management token is not an API key of the platform.
            return Ok(Verdict::without_key(Code::UnknownKey));
        }
        let record = match self
            .store
            .find_key_for_verification(&parsed.hash().to_hex())
            .await?
        {
            Some(record) if record.key.account_id == input.account_id => record,
            _ => return Ok(Verdict::without_key(Code::UnknownKey)),
        };
        let code = decide(&facts(&record), &demand(&input, credential, now_ms));
        if code == Code::UnknownKey {
            return Ok(Verdict::without_key(code));
        }
        let rate_limit = match (code, record.key.rate_limit) {
            (Code::Valid, Some(policy)) => Some(self.rate_limits.check(&record.key.id, policy)),
            _ => None,
        };
        let code = match rate_limit {
            Some(state) if !state.allowed() => Code::RateLimited,
            _ => code,
        };
        if code.is_valid() {
            self.usage.record(
                &record.key.account_id,
                &record.key.id,
                now_ms,
                input.ip.map(|ip| ip.to_canonical().to_string()),
            );
        }
        Ok(Verdict {
            code,
            key: Some(record.key),
            rate_limit,
        })
    }
}

fn facts(record: &VerificationRecord) -> KeyFacts<'_> {
    let key = &record.key;
    KeyFacts {
        id: &key.id,
        status: key.status,
        expires_at_ms: key.expires_at,
        environment: &key.environment,
        workspace_allowlist: &record.workspace_allowlist,
        key_allowlist: &key.allowed_ips,
        permissions: &key.permissions,
        customer_id: key.customer_id.as_deref(),
    }
}

fn demand<'a>(
    input: &'a VerifyInput<'a>,
    credential: &'a PresentedCredential,
    now_ms: i64,
) -> Demand<'a> {
    Demand {
        claimed_id: credential.claimed_id(),
        environment: input.environment,
        permissions: input.permissions,
        ip: input.ip,
        customer_id: input.customer_id,
        now_ms,
    }
}
