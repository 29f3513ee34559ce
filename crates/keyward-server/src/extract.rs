//! Request extractors that turn every kind of bad input into a 4xx problem
//! naming the field, instead of axum's plain-text rejections.

use crate::problem::Problem;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The largest JSON body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body, deserialised with the path of the first offending field.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(Body)
    }
}

/// A body of any media type, read whole, for a handler that must see its
/// exact bytes (a signed webhook); too large or unreadable, it is refused
/// with this API's problems rather than axum's plain text.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("the body must be at most {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        "the body could not be read",
                    )
                }
            })?;
        Ok(RawBody(bytes))
    }
}

/// A JSON body that may be left out entirely (`POST /v1/keys/{id}/revoke`
/// with no options): an empty body reads as `T::default()`.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let declared_empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if declared_empty || !req.headers().contains_key(header::CONTENT_TYPE) {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        "the body could not be read",
                    )
                })?;
            if bytes.is_empty() {
                return Ok(OptionalBody(T::default()));
            }
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        Body::from_request(req, state)
            .await
            .map(|Body(value)| OptionalBody(value))
    }
}

/// Parses JSON and reports the path of the field that failed.
///
/// A valid body, the usual case, is parsed once with plain `serde_json`:
/// tracking the path allocates a string for every field name passed, on
/// every request. Only a body that fails is parsed again, tracking it.
///
/// The body's UTF-8 is checked once, whole, and then parsed as text:
/// parsed as bytes, each string is checked on its own, which cost about
/// a hundred instructions a string. Bytes that are not UTF-8 are parsed
/// again as bytes, for the error that names where.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| failure::<T>(bytes))
}

/// One item of a list already parsed as JSON (`keys[3]`), as a `T`,
/// naming the field at fault under `item`.
pub fn parse_item<T: DeserializeOwned>(value: serde_json::Value, item: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = match field_path(&path, &message) {
            Some(field) if field != "." => format!("{item}.{field}"),
            _ => item.to_owned(),
        };
        Problem::invalid(field, strip_position(&message))
    })
}

/// Why `bytes` is not a `T`, naming the field at fault.
fn failure<T: DeserializeOwned>(bytes: &[u8]) -> Problem {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Err(e) = serde_path_to_error::deserialize::<_, T>(&mut de) else {
        // The value parsed, so what failed was the check after it.
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the body has trailing characters after the JSON value",
        );
    };
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {inner}"),
        );
    }
    let message = inner.to_string();
    let detail = strip_position(&message);
    match field_path(&path, &message) {
        Some(f) => Problem::invalid(f, detail),
        None => Problem::new(StatusCode::BAD_REQUEST, "invalid_body", detail),
    }
}

/// The full path of the field at fault. A missing field is reported at its
/// parent's path, with its name only in the message.
fn field_path(path: &str, message: &str) -> Option<String> {
    let named = message
        .starts_with("missing field")
        .then(|| unknown_field_name(message))
        .flatten();
    match (path, named) {
        (".", named) => named,
        (parent, Some(name)) => Some(format!("{parent}.{name}")),
        (parent, None) => Some(parent.to_owned()),
    }
}

/// The name in ``missing field `name` `` (or ``unknown field `foo` ``).
fn unknown_field_name(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// `?limit=&cursor=` for list endpoints. The cursor is opaque to clients.
#[derive(Debug, Clone, Default)]
pub struct Pagination {
    pub limit: u32,
    pub after: Option<String>,
}

impl Pagination {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 100;

    pub fn request(&self) -> keyward_store::PageRequest {
        keyward_store::PageRequest {
            limit: self.limit,
            after: self.after.clone(),
        }
    }
}

pub fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(after)
}

/// The position a `next_cursor` of this API stands for.
pub fn decode_cursor(cursor: &str) -> Result<String, Problem> {
    URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Problem::invalid("cursor", "not a cursor returned by this API"))
}

/// The paging parameters as sent; this is also what the OpenAPI document
/// says of them (`params(PageQuery)`), so the two cannot drift. `limit` is
/// read as text so that a bad one gets this API's own problem.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items to return.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    cursor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let raw: PageQuery = serde_urlencoded_query(parts.uri.query())?;
        let limit = match raw.limit {
            None => Self::DEFAULT_LIMIT,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=Self::MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Problem::invalid(
                        "limit",
                        format!("must be an integer from 1 to {}", Self::MAX_LIMIT),
                    )
                })?,
        };
        let after = raw.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Self { limit, after })
    }
}

/// `?order=asc|desc` on the lists that read from either end (the audit
/// log, jobs); other query parameters are left to their own extractors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ordering(pub keyward_store::ListOrder);

#[derive(Deserialize)]
struct RawOrdering {
    order: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ordering {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let raw: RawOrdering = serde_urlencoded_query(parts.uri.query())?;
        let order = match raw.order.as_deref() {
            None | Some("asc") => keyward_store::ListOrder::OldestFirst,
            Some("desc") => keyward_store::ListOrder::NewestFirst,
            Some(_) => {
                return Err(Problem::invalid(
                    "order",
                    "must be `asc` (oldest first) or `desc` (newest first)",
                ));
            }
        };
        Ok(Self(order))
    }
}

/// Deserialises a query string, naming the parameter at fault.
pub fn serde_urlencoded_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{}", query.unwrap_or(""))
            .parse()
            .map_err(|_| Problem::invalid("query", "the query string is malformed"))?,
    )
    .map(|q| q.0)
    .map_err(|e| {
        let message = e.body_text();
        match unknown_field_name(&message) {
            Some(f) => Problem::invalid(f, strip_position(&message)),
            None => Problem::invalid("query", message),
        }
    })
}

/// Distinguishes "absent" from "null" in PATCH bodies: `Option<Option<T>>`
/// where the outer `None` means the field was not sent.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        limits: Option<Limits>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        limit: u32,
    }

    #[test]
    fn names_nested_unknown_and_missing_fields() {
        let p = parse_json::<Sample>(br#"{"name": "a", "limits": {"limit": "x"}}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("limits.limit"));
        let p = parse_json::<Sample>(br#"{"name": "a", "colour": 1}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("colour"));
        let p = parse_json::<Sample>(br#"{}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("name"));
        let p = parse_json::<Sample>(br#"{"name": "a", "limits": {}}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("limits.limit"));
        let p =
            parse_json::<Sample>(br#"{"name": "a", "limits": {"limit": 1, "x": 2}}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("limits.x"));
        let p = parse_json::<Sample>(br#"{"name": "#).unwrap_err();
        assert_eq!(p.code, "malformed_json");
        let p = parse_json::<Sample>(br#"{"name": "a"} x"#).unwrap_err();
        assert_eq!(p.code, "malformed_json");
        assert!(p.detail.contains("trailing"), "{}", p.detail);
        let p = parse_json::<Sample>(br#"{"name": 1}"#).unwrap_err();
        assert_eq!(
            (p.code, p.field.as_deref()),
            ("invalid_field", Some("name"))
        );
        // Bytes that are not UTF-8, in a string or outside one.
        for body in [&b"{\"name\": \"a\xff\"}"[..], b"{\"name\": \"a\"}\xc3"] {
            let p = parse_json::<Sample>(body).unwrap_err();
            assert_eq!(p.code, "malformed_json", "{}", p.detail);
        }
        let parsed = parse_json::<Sample>("{\"name\": \"zoë\"}".as_bytes()).unwrap();
        assert_eq!(parsed.name, "zoë");
        let parsed = parse_json::<Sample>(br#"{"name": "a", "limits": {"limit": 2}}"#).unwrap();
        assert_eq!(
            (parsed.name.as_str(), parsed.limits.map(|l| l.limit)),
            ("a", Some(2))
        );
    }
}

/// An RFC 3339 timestamp in a request body.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] pub time::OffsetDateTime);
