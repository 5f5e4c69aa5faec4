//! The service's REST API as the client uses it: typed answers (only the fields the client
//! reads), and every refusal carried with the server's `detail`.
use crate::ClientError;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use url::Url;

/// The longest long-poll the API allows (`MAX_WAIT_SECONDS`); the client asks for a little less.
pub const LONG_POLL_SECONDS: u64 = 50;

/// How the thumbnails are to be made (absent fields: the server's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenderOptions {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Option<String>,
    pub format: Option<String>,
    pub quality: Option<u8>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Accepted {
    pub job_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Placeholder {
    pub thumbhash: String,
    pub blurhash: String,
}

/// A job as `GET /api/v1/jobs/{id}` returns it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    pub status: String,
    pub error: Option<Failure>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub owner: Option<String>,
    #[serde(default)]
    pub outputs: Vec<Output>,
    #[serde(default)]
    pub placeholder: Option<Placeholder>,
}

impl Job {
    pub fn is_finished(&self) -> bool {
        self.status == "SUCCESS" || self.status == "FAILURE"
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ThumbnailLink {
    pub thumbnail_url: String,
    pub expires_at: String,
}

/// An API key as listed (never its secret).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    pub owner: String,
    pub scopes: Vec<String>,
    pub name: Option<String>,
    pub state: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// A key just made: its secret, shown once.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub info: Key,
}

#[derive(Deserialize)]
struct ErrorBody {
    detail: String,
}

/// A connection to one service.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Result<Self, ClientError> {
        let mut base =
            Url::parse(base).map_err(|e| ClientError::Config(format!("the service URL '{base}': {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "the service URL must be http(s)://, got '{base}'"
            )));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Long enough for a long-poll; a hung server still ends every request.
            .read_timeout(Duration::from_secs(LONG_POLL_SECONDS + 30))
            .user_agent(concat!("thumbnail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("the HTTP client: {e}")))?;
        Ok(Api { http, base, key })
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, ClientError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Config(format!("{path}: {e}")))?;
        let request = self.http.request(method, url);
        Ok(match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        })
    }

    /// Send, and turn any answer but 2xx into [`ClientError::Refused`] with the server's detail.
    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.detail)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().chars().take(300).collect());
        Err(ClientError::Refused {
            status: status.as_u16(),
            detail: if detail.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                detail
            },
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.to_string(),
            reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        response
            .json()
            .await
            .map_err(|e| ClientError::Protocol(format!("an answer the client does not understand: {e}")))
    }

    /// Upload one image; `body` streams its bytes (so that progress can be counted as they go).
    pub async fn upload<S>(
        &self,
        file_name: &str,
        length: u64,
        body: S,
        options: &RenderOptions,
    ) -> Result<Accepted, ClientError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        let part = Part::stream_with_length(reqwest::Body::wrap_stream(body), length)
            .file_name(file_name.to_owned())
            .mime_str("application/octet-stream")
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut form = Form::new().part("image", part);
        for (field, value) in [
            ("width", options.width.map(|v| v.to_string())),
            ("height", options.height.map(|v| v.to_string())),
            ("fit", options.fit.clone()),
            ("format", options.format.clone()),
            ("quality", options.quality.map(|v| v.to_string())),
        ] {
            if let Some(value) = value {
                form = form.text(field, value);
            }
        }
        self.json(self.request(Method::POST, "api/v1/thumbnails")?.multipart(form))
            .await
    }

    /// The job now, or with `wait`, when it finishes (a long-poll: the answer comes at the end or
    /// when `wait` is over, whichever is first).
    pub async fn job(&self, id: &str, wait: Option<Duration>) -> Result<Job, ClientError> {
        let mut request = self.request(Method::GET, &format!("api/v1/jobs/{}", path_segment(id)?))?;
        if let Some(wait) = wait {
            request = request.query(&[("wait", wait.as_secs().to_string())]);
        }
        self.json(request).await
    }

    /// Wait until the job is finished, one long-poll after another.
    pub async fn wait_finished(&self, id: &str) -> Result<Job, ClientError> {
        loop {
            let job = self.job(id, Some(Duration::from_secs(LONG_POLL_SECONDS))).await?;
            if job.is_finished() {
                return Ok(job);
            }
        }
    }

    pub async fn list(&self, status: Option<&str>, limit: u32) -> Result<Vec<Job>, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(status) = status {
            query.push(("status", status.to_owned()));
        }
        self.json(self.request(Method::GET, "api/v1/jobs")?.query(&query))
            .await
    }

    pub async fn thumbnail_link(&self, id: &str) -> Result<ThumbnailLink, ClientError> {
        self.json(self.request(
            Method::GET,
            &format!("api/v1/jobs/{}/thumbnail", path_segment(id)?),
        )?)
        .await
    }

    /// Download a finished job's thumbnail to `path` (written beside it, then renamed: a failed
    /// download never leaves a partial file under the name). Returns the bytes written.
    pub async fn download(&self, id: &str, path: &Path) -> Result<u64, ClientError> {
        let link = self.thumbnail_link(id).await?;
        // The link is signed: no credentials go with it.
        let response = self.send(self.http.get(&link.thumbnail_url)).await?;
        let partial = path.with_extension("part");
        let written = async {
            let mut file = tokio::fs::File::create(&partial).await?;
            let mut stream = response.bytes_stream().map_err(std::io::Error::other);
            let mut written = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                file.write_all(&chunk).await?;
                written += chunk.len() as u64;
            }
            file.sync_all().await?;
            tokio::fs::rename(&partial, path).await?;
            Ok::<_, std::io::Error>(written)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        written.map_err(|e| ClientError::Io(format!("writing {}: {e}", path.display())))
    }

    pub async fn create_key(
        &self,
        owner: &str,
        scopes: &[String],
        name: Option<&str>,
        expires_in_seconds: Option<u64>,
    ) -> Result<CreatedKey, ClientError> {
        let mut body = serde_json::json!({ "owner": owner });
        if !scopes.is_empty() {
            body["scopes"] = serde_json::json!(scopes);
        }
        if let Some(name) = name {
            body["name"] = serde_json::json!(name);
        }
        if let Some(secs) = expires_in_seconds {
            body["expires_in_seconds"] = serde_json::json!(secs);
        }
        self.json(self.request(Method::POST, "api/v1/keys")?.json(&body))
            .await
    }

    pub async fn list_keys(&self) -> Result<Vec<Key>, ClientError> {
        self.json(self.request(Method::GET, "api/v1/keys")?).await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<Key, ClientError> {
        self.json(self.request(Method::POST, &format!("api/v1/keys/{}/revoke", path_segment(id)?))?)
            .await
    }
}

/// A job or key id as one path segment: only the characters ids are made of, so that no id
/// can reach another path.
fn path_segment(id: &str) -> Result<&str, ClientError> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(ClientError::Usage(format!("'{id}' is not a job or key id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_their_path_segment() {
        assert!(path_segment("0193a4b2-7c1d-7000-8000-000000000000").is_ok());
        assert!(path_segment("../keys").is_err());
        assert!(path_segment("a/b").is_err());
        assert!(path_segment("").is_err());
    }

    #[test]
    fn base_urls_get_a_trailing_slash_and_must_be_http() {
        let api = Api::new("http://example.test/prefix", None).unwrap();
        assert_eq!(api.base.as_str(), "http://example.test/prefix/");
        assert!(matches!(
            Api::new("ftp://example.test", None),
            Err(ClientError::Config(_))
        ));
        assert!(matches!(Api::new("not a url", None), Err(ClientError::Config(_))));
    }
}
