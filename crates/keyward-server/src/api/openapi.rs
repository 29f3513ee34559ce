//! What the OpenAPI document says beyond each handler's own annotation.
//!
//! Some answers come from a layer or an extractor rather than from the
//! handler: authentication (401, 403), the outage guard (503), the JSON body
//! (400, 413, 415) and the `Idempotency-Key` (its header, 409, 422). They
//! are added here, once, from the same facts those layers act on, instead
//! of being repeated — and forgotten — on each annotation. So are the path
//! parameters each template names, the media type of problem documents and
//! a description for every answer. `tests/admin.rs` drives every documented
//! operation and checks that each answer it gets is documented.

use axum::http::StatusCode;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{OpenApi, Ref, RefOr, Required, Response};

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";
const PROBLEM_SCHEMA: &str = "Problem";

/// Which of the router's layers an operation passes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// The management routes: the outage guard and, for authenticated
    /// POSTs, the `Idempotency-Key` layer.
    Management,
    /// `POST /v1/verify`, routed outside both.
    Verify,
}

/// Completes every operation of `doc`, all routed through `layers`.
pub fn complete(doc: &mut OpenApi, layers: Layers) {
    for (path, item) in &mut doc.paths.paths {
        for (method, operation) in operations(item) {
            declare_path_parameters(path, operation);
            add_shared_answers(method, operation, layers);
            serve_problems_as_problem_json(operation);
            describe_answers(operation);
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("patch", &mut item.patch),
        ("delete", &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
}

/// `{name}` segments of a path template, with the collection before each.
fn template_parameters(path: &str) -> Vec<(&str, &str)> {
    let segments: Vec<&str> = path.split('/').collect();
    segments
        .windows(2)
        .filter_map(|pair| {
            let name = pair[1].strip_prefix('{')?.strip_suffix('}')?;
            Some((pair[0], name))
        })
        .collect()
}

/// What the `{name}` after `collection` is; `None` for a collection this
/// table does not know yet (a unit test keeps it complete).
fn path_parameter_description(collection: &str, name: &str) -> Option<&'static str> {
    Some(match (collection, name) {
        ("workspaces", "id") => "The workspace's id (`ws_…`).",
        ("keys", "id") => "The key's id (`key_…`).",
        ("integrations", "id") => "The integration's id (`int_…`).",
        ("jobs", "id") => "The job's id (`job_…`).",
        ("ip-allowlist", "id") => "The allowlist entry's id (`ipa_…`).",
        ("members", "id") => "The member's id (`mem_…`).",
        ("management-tokens", "id") => "The management token's id (`tok_…`).",
        ("permissions", "name") => "The permission's name (`resource:action`).",
        _ => return None,
    })
}

fn declare_path_parameters(path: &str, operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for (collection, name) in template_parameters(path) {
        let declared = parameters
            .iter()
            .any(|p| p.name == name && p.parameter_in == ParameterIn::Path);
        if declared {
            continue;
        }
        let parameter = ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(path_parameter_description(collection, name))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build();
        parameters.push(parameter);
    }
}

fn is_authenticated(operation: &Operation) -> bool {
    // `security(())` on an annotation is the one empty requirement.
    operation
        .security
        .as_ref()
        .is_none_or(|requirements| requirements != &[SecurityRequirement::default()])
}

/// The operations whose handler takes its body as bytes (`RawBody`: a
/// signed webhook, checked as sent) and so never answers 415; every other
/// body is read by `Body`, which requires JSON.
const RAW_BODY_OPERATIONS: [&str; 1] = ["receiveGithubSecretAlerts"];

fn reads_raw_body(operation: &Operation) -> bool {
    operation
        .operation_id
        .as_deref()
        .is_some_and(|id| RAW_BODY_OPERATIONS.contains(&id))
}

fn add_shared_answers(method: &str, operation: &mut Operation, layers: Layers) {
    let authenticated = is_authenticated(operation);
    let has_body = operation.request_body.is_some();
    let has_query = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let idempotent = layers == Layers::Management && authenticated && method == "post";
    let mut shared = Vec::new();
    if authenticated {
        shared.extend([StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]);
    }
    if has_body || has_query || idempotent {
        shared.push(StatusCode::BAD_REQUEST);
    }
    if has_body {
        shared.push(StatusCode::PAYLOAD_TOO_LARGE);
    }
    if has_body && !reads_raw_body(operation) {
        shared.push(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    if idempotent {
        shared.extend([StatusCode::CONFLICT, StatusCode::UNPROCESSABLE_ENTITY]);
        declare_idempotency_key(operation);
    }
    shared.push(StatusCode::SERVICE_UNAVAILABLE);
    for status in shared {
        operation
            .responses
            .responses
            .entry(status.as_str().to_owned())
            .or_insert_with(|| problem_answer(status));
    }
}

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

fn is_idempotency_key(parameter: &Parameter) -> bool {
    parameter.parameter_in == ParameterIn::Header
        && parameter.name.eq_ignore_ascii_case(IDEMPOTENCY_KEY)
}

fn declare_idempotency_key(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if parameters.iter().any(is_idempotency_key) {
        return;
    }
    parameters.push(
        ParameterBuilder::new()
            .name(IDEMPOTENCY_KEY)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: a request repeated with the same key gets the \
                 first one's answer again instead of running twice.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(crate::idempotency::MAX_KEY_LEN))
                    .pattern(Some("^[!-~]+$")), // printable ASCII
            ))
            .build(),
    );
}

fn problem_answer(status: StatusCode) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(PROBLEM_SCHEMA)))
        .build();
    let mut answer = ResponseBuilder::new().content(PROBLEM_JSON, content);
    if status == StatusCode::UNAUTHORIZED {
        let challenge = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("`Bearer realm=\"keyward\"` (RFC 6750)"))
            .build();
        answer = answer.header("WWW-Authenticate", challenge);
    }
    RefOr::T(answer.build())
}

fn is_problem(content: &utoipa::openapi::Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r))
        if r.ref_location == Ref::from_schema_name(PROBLEM_SCHEMA).ref_location)
}

/// Problem documents are sent as `application/problem+json`; the
/// annotations' `body = ProblemDocument` says `application/json`.
fn serve_problems_as_problem_json(operation: &mut Operation) {
    for answer in operation.responses.responses.values_mut() {
        let RefOr::T(answer) = answer else { continue };
        if let Some(content) = answer.content.shift_remove("application/json") {
            let media_type = if is_problem(&content) {
                PROBLEM_JSON
            } else {
                "application/json"
            };
            answer.content.insert(media_type.to_owned(), content);
        }
    }
}

fn describe_answers(operation: &mut Operation) {
    for (status, answer) in &mut operation.responses.responses {
        let RefOr::T(answer) = answer else { continue };
        if answer.description.is_empty() {
            answer.description = describe(status).to_owned();
        }
    }
}

/// What an answer means where the handler's annotation does not say; the
/// problem document's `code` and `field` say exactly which case it is.
fn describe(status: &str) -> &'static str {
    match status {
        "200" => "OK.",
        "201" => "Created.",
        "202" => "Accepted: the job runs in the background.",
        "204" => "Done; no content.",
        "400" => {
            "Invalid input: the problem's `field` names the parameter, header or body field \
             at fault."
        }
        "401" => "No management token, or one that is malformed, expired, revoked or unknown.",
        "403" => "The token, or the member it acts for, lacks the account permission this needs.",
        "404" => "No such object in this account.",
        "409" => {
            "Conflicts with the object's current state, or a request with the same \
             `Idempotency-Key` is still running; the problem's `code` says which."
        }
        "410" => "Gone: no longer available.",
        "413" => "The body is over 64 KiB.",
        "415" => "The body is not sent as `Content-Type: application/json`.",
        "422" => "The `Idempotency-Key` was already used with a different request.",
        "503" => "The database is unreachable (`storage_unavailable`): nothing was changed; retry.",
        _ => "See the problem's `code`.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parameters_name_their_collection() {
        assert_eq!(
            template_parameters("/v1/workspaces/{id}/keys"),
            [("workspaces", "id")]
        );
        assert_eq!(
            template_parameters("/v1/permissions/{name}"),
            [("permissions", "name")]
        );
        assert!(template_parameters("/v1/logs").is_empty());
    }

    #[test]
    fn every_path_parameter_is_described() {
        let doc = super::super::openapi();
        for (path, item) in &doc.paths.paths {
            for (collection, name) in template_parameters(path) {
                assert!(
                    path_parameter_description(collection, name).is_some(),
                    "{path}: describe `{{{name}}}` after `{collection}`"
                );
            }
            let mut item = item.clone();
            for (method, operation) in operations(&mut item) {
                let declared: Vec<_> = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| p.parameter_in == ParameterIn::Path)
                    .map(|p| p.name.as_str())
                    .collect();
                let named: Vec<_> = template_parameters(path).iter().map(|(_, n)| *n).collect();
                assert_eq!(declared, named, "{method} {path}");
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_and_every_answer_is_described() {
        let mut doc = super::super::openapi();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in &mut doc.paths.paths {
            for (method, operation) in operations(item) {
                let id = operation.operation_id.clone().unwrap_or_default();
                assert!(!id.is_empty(), "{method} {path} has no operationId");
                assert!(ids.insert(id.clone()), "{id} names two operations");
                for (status, answer) in &operation.responses.responses {
                    let RefOr::T(answer) = answer else {
                        panic!("{method} {path} {status}: a reference")
                    };
                    assert!(!answer.description.is_empty(), "{method} {path} {status}");
                    let error = !status.starts_with('2');
                    for (media_type, content) in &answer.content {
                        assert_eq!(is_problem(content), error, "{method} {path} {status}");
                        assert_eq!(
                            media_type == PROBLEM_JSON,
                            error,
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        assert_eq!(ids.len(), 48);
    }

    #[test]
    fn token_operations_document_authentication_and_the_outage() {
        let mut doc = super::super::openapi();
        for (path, item) in &mut doc.paths.paths {
            for (method, operation) in operations(item) {
                let answers = &operation.responses.responses;
                assert!(answers.contains_key("503"), "{method} {path}");
                let authenticated = path != "/v1/secret-scanning/github";
                assert_eq!(is_authenticated(operation), authenticated, "{path}");
                if authenticated {
                    for status in ["401", "403"] {
                        assert!(answers.contains_key(status), "{method} {path}");
                    }
                }
                let idempotent = authenticated && method == "post" && path != "/v1/verify";
                let header = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(is_idempotency_key);
                assert_eq!(header, idempotent, "{method} {path}");
            }
        }
    }
}
