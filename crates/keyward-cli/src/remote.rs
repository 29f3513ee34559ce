//! A client of a running Keyward's admin API, for the `keys` and
//! `workspaces` commands. It speaks the same `/v1` routes as any other
//! client, so the server's authorization and validation apply unchanged.

use anyhow::{Context, Result, bail};
use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Where the API is and how to authenticate to it; shared by every command
/// that goes through the API.
#[derive(Args)]
pub struct ApiArgs {
    /// The Keyward server's base URL.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    api_url: Url,
    /// A file holding the management token. Without it the token comes from
    /// `KEYWARD_TOKEN`; it is never taken as an argument, where other users
    /// of the machine could read it in the process list.
    #[arg(long, global = true, env = "KEYWARD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON response instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    pub fn client(&self) -> Result<ApiClient> {
        let token = match &self.token_file {
            Some(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("--token-file: reading {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => Zeroizing::new(std::env::var("KEYWARD_TOKEN").unwrap_or_default()),
        };
        if token.is_empty() {
            bail!(
                "no management token: set KEYWARD_TOKEN or pass --token-file (`keyward init` prints one)"
            );
        }
        if !matches!(self.api_url.scheme(), "http" | "https") {
            bail!("--api-url must be an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("keyward-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("starting the HTTP client")?;
        Ok(ApiClient {
            base: self.api_url.clone(),
            token,
            http,
        })
    }
}

pub struct ApiClient {
    base: Url,
    token: Zeroizing<String>,
    http: reqwest::Client,
}

/// The API refused the request: its RFC 9457 problem, as the user should
/// read it.
#[derive(Debug)]
pub struct ApiProblem {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub field: Option<String>,
}

impl fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.detail
        )?;
        if let Some(field) = &self.field {
            write!(f, " [field: {field}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiProblem {}

impl ApiClient {
    /// `/v1/…` with each of `segments` percent-encoded as one path segment,
    /// so that an id typed by the user can never reach another route. The
    /// URL library would drop a `.` or `..` segment, so those are refused.
    pub fn url(&self, segments: &[&str]) -> Result<Url> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            bail!("{bad:?} is not an id");
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        Ok(url)
    }

    pub async fn get(&self, url: Url) -> Result<Value> {
        self.send(Method::GET, url, None).await
    }

    pub async fn post(&self, url: Url, body: &Value) -> Result<Value> {
        self.send(Method::POST, url, Some(body)).await
    }

    pub async fn patch(&self, url: Url, body: &Value) -> Result<Value> {
        self.send(Method::PATCH, url, Some(body)).await
    }

    pub async fn delete(&self, url: Url, body: Option<&Value>) -> Result<Value> {
        self.send(Method::DELETE, url, body).await
    }

    /// Every item of a paginated list, following `next_cursor`, up to `limit`.
    pub async fn list(&self, mut url: Url, limit: usize) -> Result<Vec<Value>> {
        let page_size = limit.clamp(1, 100).to_string();
        url.query_pairs_mut().append_pair("limit", &page_size);
        let mut items = Vec::new();
        let mut next = url.clone();
        loop {
            let page = self.get(next.clone()).await?;
            if let Some(data) = page["data"].as_array() {
                items.extend(data.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(cursor) if items.len() < limit => {
                    next = url.clone();
                    next.query_pairs_mut().append_pair("cursor", cursor);
                }
                _ => break,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// Streams the body of `GET url` into `out` as it arrives; returns how
    /// many bytes were written. A refusal is the API's problem, as ever.
    pub async fn download(&self, url: Url, out: &mut impl std::io::Write) -> Result<u64> {
        let mut response = self
            .http
            .get(url.clone())
            .bearer_auth(self.token.as_str())
            // A large export takes longer than an API call may.
            .timeout(std::time::Duration::from_secs(3600))
            .send()
            .await
            .with_context(|| format!("reaching the Keyward API at {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(problem(status, &value).into());
        }
        let mut written = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            out.write_all(&chunk).context("writing the download")?;
            written += chunk.len() as u64;
        }
        out.flush().context("writing the download")?;
        Ok(written)
    }

    async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value> {
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(self.token.as_str());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("reaching the Keyward API at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {url}"))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| {
                format!("{url} answered {status} with something other than JSON: is --api-url a Keyward server?")
            })?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(problem(status, &value).into())
        }
    }
}

fn problem(status: StatusCode, body: &Value) -> ApiProblem {
    let text = |name: &str| body[name].as_str().map(str::to_owned);
    ApiProblem {
        status,
        code: text("code").unwrap_or_else(|| "error".to_owned()),
        detail: text("detail")
            .or_else(|| text("title"))
            .unwrap_or_else(|| status.to_string()),
        field: text("field"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> ApiClient {
        ApiClient {
            base: base.parse().unwrap(),
            token: Zeroizing::new("t".to_owned()),
            http: reqwest::Client::new(),
        }
    }

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        let api = client("http://127.0.0.1:8080");
        assert_eq!(
            api.url(&["keys", "../workspaces", "disable"])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/v1/keys/..%2Fworkspaces/disable"
        );
        assert_eq!(
            api.url(&["keys", "a?b#c"]).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/keys/a%3Fb%23c"
        );
        for id in ["", ".", ".."] {
            assert!(
                api.url(&["keys", id, "disable"]).is_err(),
                "{id:?} accepted"
            );
        }
    }

    #[test]
    fn a_base_path_is_kept() {
        let api = client("https://example.test/keyward/");
        assert_eq!(
            api.url(&["workspaces"]).unwrap().as_str(),
            "https://example.test/keyward/v1/workspaces"
        );
    }

    #[test]
    fn problems_read_as_sentences() {
        let body = serde_json::json!({
            "type": "about:blank", "title": "Invalid request", "status": 400,
            "code": "invalid_field", "detail": "must not be empty", "field": "name"
        });
        assert_eq!(
            problem(StatusCode::BAD_REQUEST, &body).to_string(),
            "invalid_field (400): must not be empty [field: name]"
        );
        assert_eq!(
            problem(StatusCode::BAD_GATEWAY, &Value::Null).to_string(),
            "error (502): 502 Bad Gateway"
        );
    }
}
