//! What happened: request logs (seed 004) filtered by key, outcome,
//! environment and time; the audit log; background jobs with progress, and
//! starting a bulk disable or revoke.

use super::credentials::LogRow;
use super::page::{Chrome, Paging, page, page_at, readable, when};
use super::session::{ConsoleForm, ConsoleUser};
use super::workspaces::{WorkspaceOption, workspace_options};
use super::{PageResult, authorized, redirect_after};
use crate::AppState;
use crate::api::{audit, jobs, logs};
use crate::auth::{ManageCredentials, ManageMembers};
use crate::export::ExportFormat;
use crate::extract::{Body, Ordering};
use crate::invalidate::InvalidationSlot;
use crate::jobs::EXPORT_LOGS;
use crate::problem::Problem;
use askama::Template;
use axum::Json;
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::routing::{get, post};
use keyward_core::KeyStatus;
use keyward_core::verify::Code;
use keyward_store::ListOrder;
use serde::Deserialize;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/logs", get(request_logs))
        .route("/audit", get(audit_log))
        .route("/jobs", get(job_list).post(start_job))
        .route("/jobs/export", post(start_export))
        .route("/jobs/{id}/export", get(download_export))
}

/// A filter form's fields as the API's query string; empty fields are left
/// out, and a `datetime-local` value is read as UTC.
pub fn query_uri(pairs: &[(&str, &str)]) -> Result<Uri, Problem> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = form_value(name, value) {
            query.append_pair(name, &value);
        }
    }
    format!("/?{}", query.finish())
        .parse()
        .map_err(|_| Problem::invalid("filter", "not a valid filter"))
}

/// A filter form's field as the API takes it: `None` when left empty, and
/// a `datetime-local` time (`2026-11-23T10:00`) as a UTC instant.
fn form_value(name: &str, value: &str) -> Option<String> {
    let value = value.trim();
    Some(match (name, value.len()) {
        (_, 0) => return None,
        ("from" | "to", 16) => format!("{value}:00Z"),
        ("from" | "to", 19) => format!("{value}Z"),
        _ => value.to_owned(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogFilter {
    key_id: String,
    outcome: String,
    environment: String,
    from: String,
    to: String,
    /// Where the page starts: a `next_cursor` of the API.
    cursor: String,
}

impl LogFilter {
    fn fields(&self) -> [(&'static str, &str); 5] {
        [
            ("key_id", &self.key_id),
            ("outcome", &self.outcome),
            ("environment", &self.environment),
            ("from", &self.from),
            ("to", &self.to),
        ]
    }
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    chrome: Chrome,
    outcomes: Vec<&'static str>,
    filter: LogFilter,
    logs: Vec<LogRow>,
    error: Option<String>,
    paging: Paging,
}

async fn request_logs(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(filter): Query<LogFilter>,
) -> PageResult {
    let auth = authorized::<ManageCredentials>(&user)?;
    let uri = query_uri(&[
        ("key_id", &filter.key_id),
        ("code", &filter.outcome),
        ("environment", &filter.environment),
        ("from", &filter.from),
        ("to", &filter.to),
    ])?;
    // A bad filter is the person's mistake: show it above an empty table.
    let listed = match page_at(100, &filter.cursor) {
        Ok(page) => logs::list(State(state.clone()), auth, uri, page).await,
        Err(problem) => Err(problem),
    };
    let (logs, next, error) = match listed {
        Ok(Json(list)) => {
            let rows = list.data.into_iter().map(LogRow::from).collect();
            (rows, list.next_cursor, None)
        }
        Err(problem) if problem.status_code().is_client_error() => {
            (Vec::new(), None, Some(readable(&problem)))
        }
        Err(problem) => return Err(problem.into()),
    };
    let view = LogsPage {
        chrome: Chrome::new(&user, "logs"),
        outcomes: Code::ALL.iter().map(|c| c.as_str()).collect(),
        paging: Paging::newest_first("/logs", &filter.fields(), &filter.cursor, next.as_deref()),
        filter,
        logs,
        error,
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuditFilter {
    action: String,
    object_id: String,
    cursor: String,
}

pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub ip: String,
    pub action: String,
    pub object: String,
    pub change: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    filter: AuditFilter,
    events: Vec<AuditRow>,
    paging: Paging,
}

async fn audit_log(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(filter): Query<AuditFilter>,
) -> PageResult {
    let auth = authorized::<ManageMembers>(&user)?;
    let fields = [
        ("action", filter.action.as_str()),
        ("object_id", &filter.object_id),
    ];
    let uri = query_uri(&fields)?;
    let newest_first = Ordering(ListOrder::NewestFirst);
    let at = page_at(100, &filter.cursor)?;
    let Json(list) = audit::list(State(state.clone()), auth, uri, newest_first, at).await?;
    let paging = Paging::newest_first(
        "/audit",
        &fields,
        &filter.cursor,
        list.next_cursor.as_deref(),
    );
    let compact = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    let events = list
        .data
        .into_iter()
        .map(|e| AuditRow {
            seq: e.seq,
            at: when(Some(e.at)),
            actor: match (e.actor.member_id, e.actor.token_id) {
                (Some(m), Some(t)) => format!("{m} via token {t}"),
                (Some(m), None) => m,
                (None, Some(t)) => format!("token {t}"),
                (None, None) => "Keyward".into(),
            },
            ip: e.actor.ip.unwrap_or_default(),
            object: format!("{} {}", e.object_type, e.object_id),
            change: match (compact(&e.before), compact(&e.after)) {
                (Some(b), Some(a)) => format!("{b} → {a}"),
                (None, Some(a)) => a,
                (Some(b), None) => format!("was {b}"),
                (None, None) => String::new(),
            },
            action: e.action,
        })
        .collect();
    let view = AuditPage {
        chrome: Chrome::new(&user, "audit"),
        filter,
        events,
        paging,
    };
    Ok(page(&state, &user, &view))
}

pub struct JobRow {
    pub id: String,
    pub kind: String,
    /// A log export that succeeded: its file can be downloaded.
    pub downloadable: bool,
    pub status: String,
    pub done: u64,
    pub total: Option<u64>,
    pub result: String,
    pub created: String,
    pub finished: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    jobs: Vec<JobRow>,
    workspaces: Vec<WorkspaceOption>,
    /// Some job is still queued or running: the page refreshes itself.
    busy: bool,
    paging: Paging,
}

/// Where the jobs page starts: a `next_cursor` of the API.
#[derive(Deserialize, Default)]
#[serde(default)]
struct JobsAt {
    cursor: String,
}

async fn job_list(
    State(state): State<AppState>,
    user: ConsoleUser,
    Query(at): Query<JobsAt>,
) -> PageResult {
    let auth = authorized::<ManageCredentials>(&user)?;
    let newest_first = Ordering(ListOrder::NewestFirst);
    let at_page = page_at(50, &at.cursor)?;
    let Json(list) = jobs::list(State(state.clone()), auth, newest_first, at_page).await?;
    let paging = Paging::newest_first("/jobs", &[], &at.cursor, list.next_cursor.as_deref());
    let rows: Vec<JobRow> = list
        .data
        .into_iter()
        .map(|j| JobRow {
            downloadable: j.kind == EXPORT_LOGS && j.status == "succeeded",
            id: j.id,
            kind: j.kind,
            done: j.progress.done,
            total: j.progress.total,
            result: j
                .error
                .or_else(|| j.result.map(|r| serde_json::Value::Object(r).to_string()))
                .unwrap_or_default(),
            created: when(Some(j.created_at)),
            finished: when(j.finished_at),
            status: j.status,
        })
        .collect();
    let view = JobsPage {
        chrome: Chrome::new(&user, "jobs"),
        busy: rows
            .iter()
            .any(|j| j.status == "queued" || j.status == "running"),
        jobs: rows,
        workspaces: workspace_options(&state, &user).await?,
        paging,
    };
    Ok(page(&state, &user, &view))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JobForm {
    kind: String,
    workspace_id: String,
    environment: String,
    status: String,
}

async fn start_job(
    State(state): State<AppState>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<JobForm>,
) -> PageResult {
    let kind = match form.kind.as_str() {
        "disable_keys" => Ok(jobs::JobKind::DisableKeys),
        "revoke_keys" => Ok(jobs::JobKind::RevokeKeys),
        _ => Err(Problem::invalid("kind", "choose disable or revoke")),
    };
    let status = Some(form.status.as_str())
        .filter(|s| !s.is_empty())
        .map(KeyStatus::parse)
        .transpose()
        .map_err(crate::api::field("status"));
    let started = match (kind, status) {
        (Ok(kind), Ok(status)) => {
            let request = jobs::StartJob {
                workspace_id: Some(form.workspace_id),
                environment: form_value("environment", &form.environment),
                status,
                ..jobs::StartJob::of(kind)
            };
            let auth = authorized(&user)?;
            jobs::create(State(state.clone()), auth, invalidation, Body(request))
                .await
                .map(|_| "Job started; it runs in the background.".to_owned())
        }
        (Err(problem), _) | (_, Err(problem)) => Err(problem),
    };
    redirect_after(&state, "/jobs", started)
}

/// The request-log page's filter, and the file's format.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ExportForm {
    #[serde(flatten)]
    filter: LogFilter,
    format: String,
}

/// Starts an export of the logs the request-log page's filter shows.
async fn start_export(
    State(state): State<AppState>,
    invalidation: InvalidationSlot,
    ConsoleForm { user, form }: ConsoleForm<ExportForm>,
) -> PageResult {
    let auth = authorized(&user)?;
    let started = async {
        let format = ExportFormat::parse_or_default(Some(&form.format))
            .ok_or_else(|| Problem::invalid("format", "choose CSV or NDJSON"))?;
        let filter = &form.filter;
        let request = jobs::StartJob {
            key_id: form_value("key_id", &filter.key_id),
            code: form_value("code", &filter.outcome),
            environment: form_value("environment", &filter.environment),
            from: form_value("from", &filter.from),
            to: form_value("to", &filter.to),
            format: Some(format),
            ..jobs::StartJob::of(jobs::JobKind::ExportLogs)
        };
        jobs::create(State(state.clone()), auth, invalidation, Body(request))
            .await
            .map(|_| "Export started: download it below once it has finished.".to_owned())
    };
    redirect_after(&state, "/jobs", started.await)
}

async fn download_export(
    State(state): State<AppState>,
    user: ConsoleUser,
    Path(id): Path<String>,
) -> PageResult {
    let auth = authorized::<ManageCredentials>(&user)?;
    Ok(jobs::export(State(state), auth, Path(id)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_become_utc_instants() {
        let uri = query_uri(&[
            ("from", "2026-11-23T10:00"),
            ("to", "2026-11-23T11:00:30"),
            ("code", " valid "),
            ("environment", ""),
        ])
        .unwrap();
        assert_eq!(
            uri.query(),
            Some("from=2026-11-23T10%3A00%3A00Z&to=2026-11-23T11%3A00%3A30Z&code=valid")
        );
    }
}
