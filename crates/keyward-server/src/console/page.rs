//! Rendering: the frame every page shares, HTML responses, redirects and
//! readable error pages (never a raw problem document or a stack trace).

use super::session::{ConsoleUser, Flash};
use crate::AppState;
use crate::extract::{Pagination, decode_cursor};
use crate::problem::Problem;
use askama::Template;
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use keyward_core::AccountPermission;
use time::OffsetDateTime;
use time::macros::format_description;

/// What the frame around every signed-in page needs.
pub struct Chrome {
    pub email: String,
    pub csrf: String,
    pub flash: Option<Flash>,
    pub credentials: bool,
    pub members: bool,
    /// The navigation entry to highlight.
    pub active: &'static str,
}

impl Chrome {
    pub fn new(user: &ConsoleUser, active: &'static str) -> Self {
        Self {
            email: user.email.clone(),
            csrf: user.csrf.clone(),
            flash: user.flash.clone(),
            credentials: user.can(AccountPermission::ManageApiCredentials),
            members: user.can(AccountPermission::ManageMembers),
            active,
        }
    }
}

/// Renders a page as HTML. Pages are never cached: they may show a secret
/// once, or state that changes.
pub fn html(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => {
            let mut response = (status, Html(body)).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "console: a page failed to render");
            ErrorPage::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be shown.",
            )
            .into_response()
        }
    }
}

/// A signed-in page: rendered, and the flash it showed consumed.
pub fn page(state: &AppState, user: &ConsoleUser, template: &impl Template) -> Response {
    user.finish(state, html(StatusCode::OK, template))
}

/// 303 See Other: after a form post, the browser loads `to` with GET.
pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// A standalone error page, with a way back.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub status: StatusCode,
    pub message: String,
}

impl ErrorPage {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<Problem> for ErrorPage {
    fn from(problem: Problem) -> Self {
        Self::new(problem.status_code(), readable(&problem))
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        html(self.status, &self)
    }
}

/// A problem as a sentence for people: the detail, and which field it is
/// about when that helps.
pub fn readable(problem: &Problem) -> String {
    let mut message = problem.detail.clone();
    let field = problem.field.as_deref();
    // A sentence starts with a capital, unless it starts with a field name.
    if !field.is_some_and(|f| message.starts_with(f))
        && let Some(first) = message.get(..1)
    {
        message.replace_range(..1, &first.to_uppercase());
    }
    let field = field.filter(|f| !message.contains(*f));
    if !message.ends_with('.') {
        message.push('.');
    }
    match field {
        Some(field) => format!("{message} (field: {field})"),
        None => message,
    }
}

/// Where a page of a console list goes on to: the page's own filter with
/// the API's `next_cursor`, and back to the start once past it. The labels
/// say which way the list runs.
pub struct Paging {
    pub next: Option<String>,
    pub first: Option<String>,
    pub next_label: &'static str,
    pub first_label: &'static str,
}

impl Paging {
    /// Activity, latest first: "Older →", "← Newest".
    pub fn newest_first(path: &str, filter: &[(&str, &str)], at: &str, next: Option<&str>) -> Self {
        Self::new(path, filter, at, next, ("Older →", "← Newest"))
    }

    /// A list in creation order: "Next →", "← First".
    pub fn oldest_first(path: &str, filter: &[(&str, &str)], at: &str, next: Option<&str>) -> Self {
        Self::new(path, filter, at, next, ("Next →", "← First"))
    }

    fn new(
        path: &str,
        filter: &[(&str, &str)],
        at: &str,
        next: Option<&str>,
        (next_label, first_label): (&'static str, &'static str),
    ) -> Self {
        Self {
            next: next.map(|cursor| Self::link(path, filter, Some(cursor))),
            first: (!at.is_empty()).then(|| Self::link(path, filter, None)),
            next_label,
            first_label,
        }
    }

    /// `path` with the filter's non-empty fields, and `cursor` if given.
    fn link(path: &str, filter: &[(&str, &str)], cursor: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in filter.iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(name, value);
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        format!("{path}?{}", query.finish())
    }
}

/// The page a console list's `cursor` field asks for (the first when empty).
pub fn page_at(limit: u32, cursor: &str) -> Result<Pagination, Problem> {
    let after = match cursor {
        "" => None,
        cursor => Some(decode_cursor(cursor)?),
    };
    Ok(Pagination { limit, after })
}

/// `2026-11-23 14:05 UTC`, or "never".
pub fn when(at: Option<OffsetDateTime>) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    at.and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "never".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_sentences_naming_the_field() {
        let p = Problem::invalid("rate_limit.limit", "must be at least 1");
        assert_eq!(
            readable(&p),
            "Must be at least 1. (field: rate_limit.limit)"
        );
        let p = Problem::invalid("confirm_name", "confirm_name must repeat the key's name");
        assert_eq!(readable(&p), "confirm_name must repeat the key's name.");
        let p = Problem::not_found("key");
        assert!(readable(&p).ends_with('.'));
    }

    #[test]
    fn times_read_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        assert_eq!(when(Some(t)), "2026-11-18 11:06 UTC");
        assert_eq!(when(None), "never");
    }
}
