//! Gateway routes: which permissions a request to the platform's own API
//! needs, by method and path, as the operator wrote them in a TOML file;
//! and the path check that keeps a route's permissions meaning what they
//! say once the request reaches the upstream.
//!
//! Deny by default: a request no route matches is refused, never forwarded.
//! The proxy (`keyward-server`'s `gateway`) asks [`RouteTable::find`] for
//! every request; nothing here does I/O.

use crate::credits::check_amount;
use crate::model::{InvalidValue, PermissionName, validate_environment_name};
use serde::Deserialize;
use std::borrow::Cow;

/// The file as written:
///
/// ```toml
/// environment = "production"   # optional: the environment this API serves
///
/// [[route]]
/// method = "GET"               # a method, or "*" for any
/// path = "/orders/{id}"        # `{name}` one segment, `{*name}` the rest
/// permissions = ["orders:read"]
///
/// [[route]]
/// method = "GET"
/// path = "/customers/{customer}/invoices"
/// permissions = ["invoices:read"]
/// customer = "customer"        # optional: the parameter naming the customer
///
/// [[route]]
/// method = "GET"
/// path = "/invoices"
/// customer_header = "X-Customer-Id"   # or: the header naming it
/// cost = 5                     # optional: credits a metered key spends (1)
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    environment: Option<String>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    method: String,
    path: String,
    #[serde(default)]
    permissions: Vec<String>,
    customer: Option<String>,
    customer_header: Option<String>,
    cost: Option<u64>,
}

/// Why a routes file was refused, naming the route (1-based, in file order)
/// and its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Syntax(String),
    #[error("environment: {0}")]
    Environment(InvalidValue),
    #[error("the file has no [[route]]: every request would be refused")]
    NoRoutes,
    #[error("route {route}, {field}: {message}")]
    Route {
        route: usize,
        field: &'static str,
        message: String,
    },
}

/// Which requests a route covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSpec {
    Any,
    /// Upper case, as methods are compared (RFC 9110 methods are
    /// case-sensitive; every registered one is upper case).
    Only(String),
}

impl MethodSpec {
    fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::Any);
        }
        let token = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_uppercase());
        if token {
            Ok(Self::Only(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a method: expected an upper-case method such as GET, or \"*\""
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Only(method) => method,
        }
    }
}

/// One route: what a request to it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: MethodSpec,
    /// The template as written (`/orders/{id}`).
    pub path: String,
    /// Sorted, without duplicates.
    pub permissions: Vec<PermissionName>,
    /// Where a request names the customer it acts for: a key scoped to
    /// another customer is refused (SPEC §3).
    pub customer: Option<CustomerSource>,
    /// What a request takes from a metered key's credits: 1 unless the
    /// route says otherwise (an expensive endpoint, a free one).
    pub cost: u64,
}

/// Where a route's requests name their customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerSource {
    /// A one-segment parameter of the route's path template.
    PathParameter(String),
    /// A request header, by its lower-case name. The gateway forwards it
    /// as sent; only a key scoped to that customer (or to none) passes.
    Header(String),
}

/// What the table says about one request.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    Found {
        route: &'a Route,
        /// The customer the request acts for, when the route names it by
        /// a path parameter: its segment, percent-decoded. A segment that
        /// does not decode to UTF-8 names no customer a key can be scoped
        /// to. (A [`CustomerSource::Header`] is read by the caller, who
        /// holds the headers: see [`customer_in_header`].)
        customer_id: Option<Cow<'a, str>>,
    },
    /// The path has routes, none for this method: the methods it has.
    MethodNotAllowed(Vec<&'a str>),
    NotFound,
}

/// The routes of one gateway.
#[derive(Debug)]
pub struct RouteTable {
    environment: Option<String>,
    /// Path template → index into `paths`.
    router: matchit::Router<usize>,
    /// The routes sharing each template, one per method.
    paths: Vec<Vec<Route>>,
}

impl RouteTable {
    pub fn from_toml(text: &str) -> Result<Self, RouteError> {
        let file: RouteFile =
            toml::from_str(text).map_err(|e| RouteError::Syntax(e.to_string()))?;
        if let Some(environment) = &file.environment {
            validate_environment_name(environment).map_err(RouteError::Environment)?;
        }
        if file.routes.is_empty() {
            return Err(RouteError::NoRoutes);
        }
        let mut table = Self {
            environment: file.environment,
            router: matchit::Router::new(),
            paths: Vec::new(),
        };
        for (index, spec) in file.routes.into_iter().enumerate() {
            let route_error = |field, message| RouteError::Route {
                route: index + 1,
                field,
                message,
            };
            let route =
                parse_route(spec).map_err(|(field, message)| route_error(field, message))?;
            table
                .add(route)
                .map_err(|message| route_error("path", message))?;
        }
        Ok(table)
    }

    fn add(&mut self, route: Route) -> Result<(), String> {
        let at = match self.router.at(&route.path) {
            // An exact template match, not a request that happens to fit
            // another template.
            Ok(found) if self.paths[*found.value][0].path == route.path => *found.value,
            _ => {
                let at = self.paths.len();
                self.router
                    .insert(route.path.clone(), at)
                    .map_err(|e| e.to_string())?;
                self.paths.push(Vec::new());
                at
            }
        };
        let routes = &mut self.paths[at];
        if let Some(same) = routes.iter().find(|r| r.method == route.method) {
            return Err(format!(
                "{} {} is routed twice",
                same.method.as_str(),
                same.path
            ));
        }
        routes.push(route);
        Ok(())
    }

    /// The environment the upstream serves, if the file names one.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// The route for a request. `path` is the request's path without its
    /// query, as received (percent-encoded). A route for the method wins
    /// over `"*"`; `HEAD` falls back to `GET`, as HTTP defines it.
    pub fn find<'a>(&'a self, method: &str, path: &'a str) -> RouteMatch<'a> {
        let Ok(found) = self.router.at(path) else {
            return RouteMatch::NotFound;
        };
        let routes = &self.paths[*found.value];
        let only = |m: &str| {
            routes
                .iter()
                .find(|r| matches!(&r.method, MethodSpec::Only(x) if x == m))
        };
        let any = || routes.iter().find(|r| r.method == MethodSpec::Any);
        let head_as_get = || if method == "HEAD" { only("GET") } else { None };
        match only(method).or_else(head_as_get).or_else(any) {
            Some(route) => RouteMatch::Found {
                route,
                customer_id: match &route.customer {
                    Some(CustomerSource::PathParameter(name)) => {
                        found.params.get(name).map(decode_segment)
                    }
                    _ => None,
                },
            },
            None => {
                RouteMatch::MethodNotAllowed(routes.iter().map(|r| r.method.as_str()).collect())
            }
        }
    }
}

/// A path segment percent-decoded; one that does not decode to UTF-8
/// becomes the empty string, which is no valid customer id.
fn decode_segment(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .unwrap_or(Cow::Borrowed(""))
}

/// The customer a request names in a [`CustomerSource::Header`], given the
/// header's values: exactly one, in UTF-8. None, several, or one that is not
/// UTF-8 name no customer a key can be scoped to (the empty string), so a
/// client cannot pick among values to pass.
pub fn customer_in_header<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> &'a str {
    match (values.next(), values.next()) {
        (Some(only), None) => std::str::from_utf8(only).unwrap_or(""),
        _ => "",
    }
}

/// Headers the gateway never forwards as the client sent them: the
/// credentials, `Host` (replaced by the upstream's) and the hop-by-hop
/// headers of RFC 9110 §7.6.1 — besides its own `Keyward-*` identity
/// headers. (The server's own stripping is tested against this list.)
const NOT_FORWARDED: [&str; 11] = [
    "authorization",
    "x-api-key",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers a route cannot read its customer from: those the gateway does
/// not forward as sent, so the upstream would never see the customer it
/// was checked against.
fn check_customer_header(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let token = !lower.is_empty()
        && lower.len() <= 64
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("{name:?} is not a header name"));
    }
    if lower.starts_with("keyward-") || NOT_FORWARDED.contains(&lower.as_str()) {
        return Err(format!(
            "{name:?} is removed before forwarding; name the customer in another header"
        ));
    }
    Ok(lower)
}

/// The customer parameter must be a one-segment parameter of the route's
/// own template: a customer id is one segment, and a name the template
/// lacks would silently check nothing.
fn check_customer_parameter(path: &str, name: &str) -> Result<(), String> {
    if path.contains(&format!("{{{name}}}")) {
        return Ok(());
    }
    if path.contains(&format!("{{*{name}}}")) {
        return Err(format!(
            "{{*{name}}} takes the rest of the path; a customer is one segment, {{{name}}}"
        ));
    }
    Err(format!(
        "the path {path:?} has no parameter {{{name}}} to read the customer from"
    ))
}

fn parse_route(spec: RouteSpec) -> Result<Route, (&'static str, String)> {
    let method = MethodSpec::parse(&spec.method).map_err(|m| ("method", m))?;
    if !spec.path.starts_with('/') {
        return Err(("path", format!("{:?} must start with '/'", spec.path)));
    }
    let mut permissions = spec
        .permissions
        .iter()
        .map(|p| PermissionName::parse(p).map_err(|e| ("permissions", e.message)))
        .collect::<Result<Vec<_>, _>>()?;
    permissions.sort();
    permissions.dedup();
    let customer = match (spec.customer, spec.customer_header) {
        (Some(_), Some(_)) => {
            return Err((
                "customer_header",
                "a route names its customer by `customer` (a path parameter) or by `customer_header`, not both".into(),
            ));
        }
        (Some(name), None) => {
            check_customer_parameter(&spec.path, &name).map_err(|m| ("customer", m))?;
            Some(CustomerSource::PathParameter(name))
        }
        (None, Some(header)) => Some(CustomerSource::Header(
            check_customer_header(&header).map_err(|m| ("customer_header", m))?,
        )),
        (None, None) => None,
    };
    let cost = spec.cost.unwrap_or(1);
    check_amount(cost).map_err(|e| ("cost", e.message))?;
    Ok(Route {
        method,
        path: spec.path,
        permissions,
        customer,
        cost,
    })
}

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathFault {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    #[error("the path has an empty segment ('//')")]
    EmptySegment,
    #[error("the path has an encoded '/' or '\\', or a '\\'")]
    HiddenSeparator,
}

/// Refuses paths an upstream might resolve to another route than the one
/// they match here: `/public/../admin` matches `/public/{*rest}` but an
/// upstream that normalizes it serves `/admin`. Dot segments (also
/// percent-encoded), empty segments (which some servers merge), encoded
/// slashes and backslashes (which some decode into separators) are all
/// refused rather than normalized: a client of an API has no need of them.
pub fn check_request_path(path: &str) -> Result<(), PathFault> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathFault::NotAbsolute);
    };
    if path.contains('\\') || contains_encoded_separator(path) {
        return Err(PathFault::HiddenSeparator);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.into_iter().enumerate() {
        // One trailing slash (`/orders/`) is an ordinary path.
        if segment.is_empty() && i != last {
            return Err(PathFault::EmptySegment);
        }
        if is_dot_segment(segment) {
            return Err(PathFault::DotSegment);
        }
    }
    Ok(())
}

fn contains_encoded_separator(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')
            || w[0] == b'%' && w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')
    })
}

/// `.` or `..`, each dot written plainly or as `%2e`/`%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3
            && rest[0] == b'%'
            && rest[1] == b'2'
            && rest[2].eq_ignore_ascii_case(&b'e')
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    (1..=2).contains(&dots)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        environment = "production"

        [[route]]
        method = "GET"
        path = "/orders/{id}"
        permissions = ["orders:read"]

        [[route]]
        method = "DELETE"
        path = "/orders/{id}"
        permissions = ["orders:write", "orders:read", "orders:write"]

        [[route]]
        method = "*"
        path = "/public/{*rest}"
    "#;

    fn permissions(found: RouteMatch<'_>) -> Vec<&str> {
        match found {
            RouteMatch::Found { route, .. } => {
                route.permissions.iter().map(|p| p.as_str()).collect()
            }
            other => panic!("expected a route, got {other:?}"),
        }
    }

    #[test]
    fn routes_by_method_and_template() {
        let table = RouteTable::from_toml(FILE).unwrap();
        assert_eq!(table.environment(), Some("production"));
        assert_eq!(permissions(table.find("GET", "/orders/7")), ["orders:read"]);
        assert_eq!(
            permissions(table.find("HEAD", "/orders/7")),
            ["orders:read"]
        );
        assert_eq!(
            permissions(table.find("DELETE", "/orders/7")),
            ["orders:read", "orders:write"]
        );
        assert_eq!(
            table.find("POST", "/orders/7"),
            RouteMatch::MethodNotAllowed(vec!["GET", "DELETE"])
        );
        assert!(permissions(table.find("PATCH", "/public/a/b")).is_empty());
        assert_eq!(table.find("GET", "/orders"), RouteMatch::NotFound);
        assert_eq!(table.find("GET", "/admin"), RouteMatch::NotFound);
    }

    #[test]
    fn a_method_route_wins_over_any() {
        let table = RouteTable::from_toml(
            r#"
            [[route]]
            method = "*"
            path = "/a"
            [[route]]
            method = "POST"
            path = "/a"
            permissions = ["a:write"]
            "#,
        )
        .unwrap();
        assert_eq!(permissions(table.find("POST", "/a")), ["a:write"]);
        assert!(permissions(table.find("GET", "/a")).is_empty());
        assert_eq!(table.environment(), None);
    }

    fn refusal(text: &str) -> String {
        RouteTable::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_route_and_field() {
        let route =
            |body: &str| format!("[[route]]\nmethod = \"GET\"\npath = \"/a\"\n[[route]]\n{body}");
        assert!(refusal(&route("method = \"get\"\npath = \"/b\"")).starts_with("route 2, method:"));
        assert!(refusal(&route("method = \"GET\"\npath = \"b\"")).starts_with("route 2, path:"));
        assert!(refusal(&route("method = \"GET\"\npath = \"/a\"")).contains("routed twice"));
        assert!(
            refusal(&route(
                "method = \"GET\"\npath = \"/b\"\npermissions = [\"Orders\"]"
            ))
            .starts_with("route 2, permissions:")
        );
        assert!(refusal(&route("method = \"GET\"\npath = \"/{x\"")).starts_with("route 2, path:"));
        assert!(
            refusal(&route("method = \"GET\"\npath = \"/b\"\nperms = []"))
                .contains("unknown field")
        );
        assert_eq!(refusal(""), RouteError::NoRoutes.to_string());
        assert!(
            refusal("environment = \"Prod\"\n[[route]]\nmethod = \"GET\"\npath = \"/\"")
                .starts_with("environment:")
        );
    }

    #[test]
    fn a_route_may_name_the_customer_parameter() {
        let table = RouteTable::from_toml(
            r#"
            [[route]]
            method = "GET"
            path = "/customers/{customer}/invoices/{id}"
            permissions = ["invoices:read"]
            customer = "customer"
            [[route]]
            method = "GET"
            path = "/invoices/{id}"
            "#,
        )
        .unwrap();
        let customer = |path| match table.find("GET", path) {
            RouteMatch::Found { customer_id, .. } => customer_id,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            customer("/customers/cus_1/invoices/9").as_deref(),
            Some("cus_1")
        );
        assert_eq!(
            customer("/customers/acme%3Aeu/invoices/9").as_deref(),
            Some("acme:eu"),
            "percent-decoded"
        );
        assert_eq!(customer("/customers/%FF/invoices/9").as_deref(), Some(""));
        assert_eq!(customer("/invoices/9"), None, "the route names none");
        let named = |customer: &str| {
            refusal(&format!(
                "[[route]]\nmethod = \"GET\"\npath = \"/c/{{c}}/{{*rest}}\"\ncustomer = \"{customer}\""
            ))
        };
        assert!(
            named("id").starts_with("route 1, customer:"),
            "{}",
            named("id")
        );
        assert!(named("rest").contains("one segment"), "{}", named("rest"));
    }

    #[test]
    fn a_route_costs_one_credit_unless_it_says_otherwise() {
        let table = RouteTable::from_toml(
            "[[route]]\nmethod = \"POST\"\npath = \"/render\"\ncost = 25\n\
             [[route]]\nmethod = \"GET\"\npath = \"/health\"\ncost = 0\n\
             [[route]]\nmethod = \"GET\"\npath = \"/orders\"",
        )
        .unwrap();
        let cost = |method, path| match table.find(method, path) {
            RouteMatch::Found { route, .. } => route.cost,
            _ => panic!("{method} {path} not routed"),
        };
        assert_eq!(
            [
                cost("POST", "/render"),
                cost("GET", "/health"),
                cost("GET", "/orders")
            ],
            [25, 0, 1]
        );
        let too_dear =
            refusal("[[route]]\nmethod = \"GET\"\npath = \"/x\"\ncost = 1000000000000000001");
        assert!(too_dear.starts_with("route 1, cost:"), "{too_dear}");
        assert!(
            refusal("[[route]]\nmethod = \"GET\"\npath = \"/x\"\ncost = -1").contains("cost"),
            "a negative cost is refused"
        );
    }

    #[test]
    fn a_route_may_name_the_customer_header() {
        let table = RouteTable::from_toml(
            "[[route]]\nmethod = \"GET\"\npath = \"/invoices\"\ncustomer_header = \"X-Customer-Id\"",
        )
        .unwrap();
        let RouteMatch::Found { route, customer_id } = table.find("GET", "/invoices") else {
            panic!("routed");
        };
        assert_eq!(
            route.customer,
            Some(CustomerSource::Header("x-customer-id".into()))
        );
        assert_eq!(customer_id, None, "read from the headers by the caller");
        let header = |name: &str| {
            refusal(&format!(
                "[[route]]\nmethod = \"GET\"\npath = \"/c/{{c}}\"\ncustomer_header = \"{name}\""
            ))
        };
        for refused in [
            "",
            "X Customer",
            "Keyward-Customer-Id",
            "Authorization",
            "x-api-key",
        ] {
            assert!(
                header(refused).starts_with("route 1, customer_header:"),
                "{refused}: {}",
                header(refused)
            );
        }
        let both = refusal(
            "[[route]]\nmethod = \"GET\"\npath = \"/c/{c}\"\ncustomer = \"c\"\ncustomer_header = \"x-c\"",
        );
        assert!(both.contains("not both"), "{both}");
    }

    #[test]
    fn a_header_names_a_customer_only_with_one_utf8_value() {
        let read = |values: &[&[u8]]| customer_in_header(values.iter().copied()).to_owned();
        assert_eq!(read(&[b"cus_1"]), "cus_1");
        assert_eq!(read(&[]), "");
        assert_eq!(read(&[b"cus_1", b"cus_2"]), "", "no picking among values");
        assert_eq!(read(&[b"\xFFcus"]), "");
    }

    #[test]
    fn conflicting_templates_are_refused() {
        let text = "[[route]]\nmethod = \"GET\"\npath = \"/a/{x}\"\n[[route]]\nmethod = \"POST\"\npath = \"/a/{y}\"";
        assert!(refusal(text).starts_with("route 2, path:"));
    }

    #[test]
    fn request_paths() {
        for ok in [
            "/",
            "/orders",
            "/orders/",
            "/orders/7",
            "/a.b/c..d/...",
            "/%41/%2E%2Ex",
        ] {
            assert_eq!(check_request_path(ok), Ok(()), "{ok}");
        }
        for (bad, fault) in [
            ("orders", PathFault::NotAbsolute),
            ("", PathFault::NotAbsolute),
            ("/a/../admin", PathFault::DotSegment),
            ("/a/./b", PathFault::DotSegment),
            ("/a/..", PathFault::DotSegment),
            ("/a/%2e%2E/admin", PathFault::DotSegment),
            ("/a/.%2e/admin", PathFault::DotSegment),
            ("//admin", PathFault::EmptySegment),
            ("/a//b", PathFault::EmptySegment),
            ("/a%2fb", PathFault::HiddenSeparator),
            ("/a%5Cb", PathFault::HiddenSeparator),
            ("/a\\b", PathFault::HiddenSeparator),
        ] {
            assert_eq!(check_request_path(bad), Err(fault), "{bad}");
        }
    }
}
