//! RFC 9457 problem details: every error the API returns is one of these,
//! with a stable machine-readable `code` and, for bad input, the `field`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error the API answers with. Kept small (it travels in every `Err`);
/// the `type` and `title` members are derived when it is rendered.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    /// Stable, machine-readable; clients branch on this.
    pub code: &'static str,
    pub detail: String,
    /// The request field at fault, as a path (`rate_limit.limit`, `allowed_ips[2]`).
    pub field: Option<String>,
}

/// The `application/problem+json` document (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument<'a> {
    /// `urn:keyward:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: &'a str,
    /// Stable, machine-readable; clients branch on this.
    pub code: &'a str,
    /// The request field at fault, as a path (`rate_limit.limit`, `allowed_ips[2]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The same problem about an item of a list: its field, if any, is
    /// put under `item` (`keys[3]` + `name` → `keys[3].name`).
    pub fn within(self, item: &str) -> Self {
        let field = match &self.field {
            Some(field) => format!("{item}.{field}"),
            None => item.to_owned(),
        };
        self.with_field(field)
    }

    /// 503 `storage_unavailable`: the store cannot be reached.
    pub fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable; nothing was changed, retry shortly",
        )
    }

    /// 400 `invalid_field`: the named field has a value that is not acceptable.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", detail).with_field(field)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; nothing was changed",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        self.status
    }

    pub fn document(&self) -> ProblemDocument<'_> {
        ProblemDocument {
            type_uri: format!("urn:keyward:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            field: self.field.as_deref(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.document())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, field } => {
                let p = Problem::not_found(what);
                match field {
                    Some(f) => p.with_field(f),
                    None => p,
                }
            }
            StoreError::Conflict { field, message } => {
                Problem::conflict("conflict", message).with_field(field)
            }
            StoreError::Invalid { field, message } => Problem::invalid(field, message),
            StoreError::InUse { message } => Problem::conflict("in_use", message),
            StoreError::Refused { code, message } => Problem::conflict(code, message),
            StoreError::Unavailable(source) => {
                tracing::error!(error = %source, "storage unavailable");
                Problem::storage_unavailable()
            }
            StoreError::InItem {
                list,
                index,
                source,
            } => Problem::from(*source).within(&format!("{list}[{index}]")),
            StoreError::Config(message) | StoreError::Corrupt(message) => {
                tracing::error!(%message, "store failure");
                Problem::internal()
            }
        }
    }
}

pub type ApiResult<T> = Result<T, Problem>;
