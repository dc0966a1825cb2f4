//! A small HTTP client for the API, turning error bodies into readable errors.

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::config::ClientArgs;

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub(super) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let base = args.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server must be an http:// or https:// URL, got {base:?}");
        }
        crate::tls::install_crypto_provider();
        // Follow requests long-poll for up to a minute.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(90))
            // Below the master's keep-alive idle timeout, so a pooled
            // connection is never reused just as the master closes it.
            .pool_idle_timeout(crate::api::HEADER_READ_TIMEOUT / 2)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base,
            token: args.token.clone(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path)).await
    }

    /// `GET path` for a list the server answers in pages (a JSON array and
    /// a `Link: <next>; rel="next"` header while more follow): every page,
    /// as one array.
    pub(super) async fn get_all(&self, path: &str) -> anyhow::Result<Value> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            let response = self
                .request(Method::GET, &path)
                .send()
                .await
                .with_context(|| format!("cannot reach the sandcron server at {}", self.base))?;
            next = next_link(response.headers());
            match self.answer(response).await? {
                Value::Array(page) => items.extend(page),
                other => bail!("expected a list from {path}, got {other}"),
            }
        }
        Ok(Value::Array(items))
    }

    /// `GET path`, or `None` when the server answers 404.
    pub(super) async fn get_optional(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach the sandcron server at {}", self.base))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.answer(response).await.map(Some)
    }

    /// `GET path` for a body that is not JSON (a state value): its bytes.
    pub(super) async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach the sandcron server at {}", self.base))?;
        if !response.status().is_success() {
            // Fails with the error body's message.
            self.answer(response).await?;
            bail!("the server refused the request");
        }
        let bytes = response.bytes().await.context("cannot read the server's answer")?;
        Ok(bytes.to_vec())
    }

    pub(super) async fn get_query(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.request(Method::GET, path).query(query)).await
    }

    pub(super) async fn post(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::POST, path)).await
    }

    pub(super) async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// POSTs `bytes` as an `application/wasm` body, with `query` parameters.
    pub(super) async fn post_wasm(&self, path: &str, query: &[(&str, &str)], bytes: Vec<u8>) -> anyhow::Result<Value> {
        self.send(
            self.request(Method::POST, path)
                .query(query)
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes),
        )
        .await
    }

    /// PUTs `bytes` as a `text/plain` body.
    pub(super) async fn put_text(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        self.send(
            self.request(Method::PUT, path)
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(bytes),
        )
        .await
    }

    pub(super) async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(Method::DELETE, path)).await
    }

    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the sandcron server at {}", self.base))?;
        self.answer(response).await
    }

    async fn answer(&self, response: reqwest::Response) -> anyhow::Result<Value> {
        let status = response.status();
        let bytes = response.bytes().await.context("cannot read the server's answer")?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        match body["error"]["field"].as_str() {
            Some(field) => bail!("{message} (field {field}; HTTP {})", status.as_u16()),
            None => bail!("{message} (HTTP {})", status.as_u16()),
        }
    }
}

/// The path (below `/api/v1`) of a `Link` header's `rel="next"` target.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find(|link| link.contains("rel=\"next\""))
        .and_then(|link| link.trim().strip_prefix('<')?.split_once('>'))
        .and_then(|(target, _)| target.strip_prefix("/api/v1").map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut headers = HeaderMap::new();
        assert_eq!(super::next_link(&headers), None);
        headers.insert(
            LINK,
            HeaderValue::from_static(
                "</api/v1/jobs?limit=2>; rel=\"first\", </api/v1/jobs?limit=2&after=b>; rel=\"next\"",
            ),
        );
        assert_eq!(super::next_link(&headers).as_deref(), Some("/jobs?limit=2&after=b"));
        headers.insert(
            LINK,
            HeaderValue::from_static("<https://elsewhere.example/x>; rel=\"next\""),
        );
        assert_eq!(
            super::next_link(&headers),
            None,
            "only a path on this server is followed"
        );
    }
}
