//! The audit log: who changed what in the account, when and from where.

use super::views::{AuditEventView, List};
use crate::AppState;
use crate::auth::{Authorized, ManageMembers};
use crate::clock::to_ms;
use crate::extract::{Ordering, Pagination, serde_urlencoded_query};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use keyward_store::AuditFilter;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Audit is an account administrator's view (it shows every member's
/// actions), so it takes the permission that governs members.
type Auth = Authorized<ManageMembers>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    action: Option<String>,
    object_id: Option<String>,
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "limit")]
    _limit: Option<String>,
    #[serde(rename = "cursor")]
    _cursor: Option<String>,
    #[serde(rename = "order")]
    _order: Option<String>,
}

/// The account's audit events, oldest first (the order of the hash chain),
/// or newest first with `order=desc`. Requires `manage_members`: the log shows every member's actions, so it is
/// an account administrator's view. Each event's `hash` chains it to the
/// previous one; `keyward audit verify` checks the chain.
#[utoipa::path(get, operation_id = "listAuditEvents", path = "/v1/audit-events", tag = "audit",
    params(
        ("action" = Option<String>, Query, description = "e.g. `key.created`"),
        ("object_id" = Option<String>, Query, description = "the id of the object acted on"),
        ("actor" = Option<String>, Query, description = "the id of the member who acted"),
        ("from" = Option<String>, Query, format = DateTime, description = "events at or after (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "events before (RFC 3339)"),
        ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "`asc` (the default: oldest first, the chain's order) or `desc` (newest first)"),
        crate::extract::PageQuery),
    responses((status = 200, body = List<AuditEventView>), (status = 400, body = ProblemDocument),
              (status = 403, body = ProblemDocument)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Auth,
    uri: Uri,
    Ordering(order): Ordering,
    page: Pagination,
) -> ApiResult<Json<List<AuditEventView>>> {
    let query: AuditQuery = serde_urlencoded_query(uri.query())?;
    let filter = AuditFilter {
        action: query.action,
        object_id: query.object_id,
        actor_member_id: query.actor,
        from: query
            .from
            .as_deref()
            .map(|t| time_ms("from", t))
            .transpose()?,
        to: query.to.as_deref().map(|t| time_ms("to", t)).transpose()?,
    };
    let events = state
        .store
        .list_audit_events(&who.account_id, &filter, order, &page.request())
        .await?;
    Ok(Json(List::from_page(events, AuditEventView::from)))
}

fn time_ms(field: &'static str, text: &str) -> ApiResult<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(to_ms)
        .map_err(|_| Problem::invalid(field, "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"))
}
