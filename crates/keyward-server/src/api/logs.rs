//! Request logs: every verification outcome, newest first, kept after the
//! key is deleted and purged after the retention period.

use super::views::List;
use crate::AppState;
use crate::auth::{Authorized, ManageCredentials};
use crate::clock::{from_ms, to_ms};
use crate::extract::{Pagination, serde_urlencoded_query};
use crate::problem::{ApiResult, Problem, ProblemDocument};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use keyward_core::validate_environment_name;
use keyward_core::verify::Code;
use keyward_store::{RequestLog, RequestLogFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestLogView {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `null` when no key of the account matched.
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    /// The key's environment, else the one the verify call asked for.
    pub environment: Option<String>,
    pub client_ip: Option<String>,
    /// The permissions the verify call asked for.
    pub permissions: Vec<String>,
    pub code: String,
    /// The HTTP status the verdict told the platform to answer with.
    pub status: u16,
    /// Time spent deciding, in microseconds.
    pub latency_us: i64,
    /// In gateway mode (`keyward proxy`), the request's method; else `null`.
    pub method: Option<String>,
    /// In gateway mode, the request's path, without its query; else `null`.
    pub path: Option<String>,
}

impl From<RequestLog> for RequestLogView {
    fn from(log: RequestLog) -> Self {
        let entry = log.entry;
        let status = Code::ALL
            .iter()
            .find(|c| c.as_str() == entry.code)
            .map_or(0, |c| c.http_status());
        Self {
            id: log.id,
            at: from_ms(entry.at),
            key_id: entry.key_id,
            workspace_id: entry.workspace_id,
            environment: entry.environment,
            client_ip: entry.client_ip.map(|ip| ip.to_string()),
            permissions: entry.permissions,
            code: entry.code,
            status,
            latency_us: entry.latency_us,
            method: entry.method,
            path: entry.path,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    key_id: Option<String>,
    workspace_id: Option<String>,
    #[serde(alias = "outcome")]
    code: Option<String>,
    environment: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "limit")]
    _limit: Option<String>,
    #[serde(rename = "cursor")]
    _cursor: Option<String>,
}

fn filter(query: LogQuery, key_id: Option<String>) -> ApiResult<RequestLogFilter> {
    let known = |code: &String| Code::ALL.iter().any(|c| c.as_str() == code);
    if query.code.as_ref().is_some_and(|code| !known(code)) {
        return Err(Problem::invalid("code", "not a verification code"));
    }
    if let Some(env) = &query.environment {
        validate_environment_name(env).map_err(super::field("environment"))?;
    }
    let time = |name: &'static str, value: Option<String>| {
        value
            .map(|v| {
                OffsetDateTime::parse(&v, &Rfc3339)
                    .map(to_ms)
                    .map_err(|_| Problem::invalid(name, "must be an RFC 3339 timestamp"))
            })
            .transpose()
    };
    Ok(RequestLogFilter {
        key_id: key_id.or(query.key_id),
        workspace_id: query.workspace_id,
        code: query.code,
        environment: query.environment,
        from: time("from", query.from)?,
        to: time("to", query.to)?,
    })
}

/// The filter an `export_logs` job was started with: its params hold the
/// query parameters of `GET /v1/logs` (as strings), checked by the same
/// rules, so that an export holds exactly what the list would show.
pub(crate) fn filter_from_params(params: &Map<String, Value>) -> ApiResult<RequestLogFilter> {
    let text = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_owned);
    let query = LogQuery {
        key_id: text("key_id"),
        workspace_id: text("workspace_id"),
        code: text("code"),
        environment: text("environment"),
        from: text("from"),
        to: text("to"),
        _limit: None,
        _cursor: None,
    };
    filter(query, None)
}

/// Lists the account's request logs, newest first.
#[utoipa::path(get, operation_id = "listRequestLogs", path = "/v1/logs", tag = "logs",
    params(("key_id" = Option<String>, Query), ("workspace_id" = Option<String>, Query),
           ("code" = Option<keyward_core::verify::Code>, Query, description = "A verification code; `outcome` is an alias"),
           ("environment" = Option<String>, Query),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive"),
           crate::extract::PageQuery),
    responses((status = 200, body = List<RequestLogView>), (status = 400, body = ProblemDocument)))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(who, _): Authorized<ManageCredentials>,
    uri: Uri,
    page: Pagination,
) -> ApiResult<Json<List<RequestLogView>>> {
    let filter = filter(serde_urlencoded_query(uri.query())?, None)?;
    let logs = state
        .store
        .list_request_logs(&who.account_id, &filter, &page.request())
        .await?;
    Ok(Json(List::from_page(logs, RequestLogView::from)))
}

/// Lists one key's request logs, newest first — also after the key was deleted.
#[utoipa::path(get, operation_id = "listKeyRequestLogs", path = "/v1/keys/{id}/logs", tag = "logs",
    params(("id" = String, Path), ("workspace_id" = Option<String>, Query),
           ("code" = Option<keyward_core::verify::Code>, Query, description = "A verification code; `outcome` is an alias"),
           ("environment" = Option<String>, Query),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive"),
           crate::extract::PageQuery),
    responses((status = 200, body = List<RequestLogView>), (status = 400, body = ProblemDocument)))]
pub async fn list_for_key(
    State(state): State<AppState>,
    Authorized(who, _): Authorized<ManageCredentials>,
    Path(key_id): Path<String>,
    uri: Uri,
    page: Pagination,
) -> ApiResult<Json<List<RequestLogView>>> {
    let filter = filter(serde_urlencoded_query(uri.query())?, Some(key_id))?;
    let logs = state
        .store
        .list_request_logs(&who.account_id, &filter, &page.request())
        .await?;
    Ok(Json(List::from_page(logs, RequestLogView::from)))
}
