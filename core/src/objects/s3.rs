//! Objects in an S3-compatible store (AWS S3, MinIO, Garage, s3s).
//!
//! Path-style addressing and checksums only when the operation requires them: the SDK's default
//! CRC32 checksums are refused by several S3-compatible servers. Presigned URLs are signed for the
//! *public* endpoint, because the signature covers the Host header: a URL signed for the in-cluster
//! name (`http://minio:9000`) does not work from a laptop, and rewriting its host breaks it.
use super::ObjectStore;
use crate::{CoreError, Result};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, SharedHttpClient,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connection settings; the environment variable names are the original service's.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// `S3_ENDPOINT_URL`: where this process reaches S3 (e.g. `http://minio:9000`); unset for AWS.
    pub endpoint_url: Option<String>,
    /// `S3_PUBLIC_ENDPOINT_URL`: the endpoint clients use to open presigned URLs; defaults to
    /// `endpoint_url`.
    pub public_endpoint_url: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `S3_CREDENTIALS_FILE`: keys read from a file instead of the two variables above, e.g. a
    /// Kubernetes Secret mounted as a file. See [`read_credentials_file`] for the format. When
    /// set, it takes precedence over `access_key_id` and `secret_access_key`.
    pub credentials_file: Option<PathBuf>,
    /// Create the bucket at start-up when it does not exist.
    pub create_bucket: bool,
}

/// The environment variable that names [`S3Config::credentials_file`].
pub const CREDENTIALS_FILE_ENV: &str = "S3_CREDENTIALS_FILE";

/// Static keys, as read from a credentials file.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Read S3 keys from `path`, which is either
/// - a file of `NAME=value` lines, as an env file or a Kubernetes Secret with one multi-line
///   entry would be: `AWS_ACCESS_KEY_ID=...`, `AWS_SECRET_ACCESS_KEY=...`, optionally
///   `AWS_SESSION_TOKEN=...`. Blank lines, `#` comments, an `export ` prefix, spaces around `=`
///   and quotes around the value are allowed; names are case-insensitive, so the
///   `aws_access_key_id = ...` lines of an AWS credentials file work too. Other names are ignored.
/// - or a directory holding one file per key (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
///   optionally `AWS_SESSION_TOKEN`), as a whole Kubernetes Secret mounted as a volume is.
///
/// Errors name the file and the missing key, never a secret value.
pub fn read_credentials_file(path: &Path) -> Result<StaticKeys> {
    let unreadable =
        |e: std::io::Error| CoreError::Config(format!("{CREDENTIALS_FILE_ENV} {}: {e}", path.display()));
    let mut access_key_id = None;
    let mut secret_access_key = None;
    let mut session_token = None;
    if path.is_dir() {
        let read = |name: &str| -> Result<Option<String>> {
            match std::fs::read_to_string(path.join(name)) {
                Ok(text) => Ok(Some(text.trim().to_owned()).filter(|v| !v.is_empty())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(unreadable(e)),
            }
        };
        access_key_id = read("AWS_ACCESS_KEY_ID")?;
        secret_access_key = read("AWS_SECRET_ACCESS_KEY")?;
        session_token = read("AWS_SESSION_TOKEN")?;
    } else {
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value)
                .to_owned();
            let slot = match name.trim().to_ascii_uppercase().as_str() {
                "AWS_ACCESS_KEY_ID" => &mut access_key_id,
                "AWS_SECRET_ACCESS_KEY" => &mut secret_access_key,
                "AWS_SESSION_TOKEN" => &mut session_token,
                _ => continue,
            };
            *slot = Some(value).filter(|v| !v.is_empty());
        }
    }
    let missing =
        |name: &str| CoreError::Config(format!("{CREDENTIALS_FILE_ENV} {} has no {name}", path.display()));
    Ok(StaticKeys {
        access_key_id: access_key_id.ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
        secret_access_key: secret_access_key.ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        session_token,
    })
}

/// How long a readiness check ([`ObjectStore::ping`]) waits at most.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

pub struct S3ObjectStore {
    client: Client,
    /// Same credentials, configured with the public endpoint: used only to presign.
    presigner: Client,
    bucket: String,
    endpoint_url: String,
}

/// The SDK's default HTTPS client, except with `TCP_NODELAY` on. The default one
/// (aws-smithy-runtime 1.10) builds its connector from `ConnectorBuilder::default()`, which leaves
/// Nagle's algorithm on: the last partial segment of every streamed upload then waits for the
/// server's delayed ACK, about 40 ms per PUT on Linux, which capped the service at ~40 jobs/s.
fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut builder = aws_smithy_http_client::Connector::builder()
            .enable_tcp_nodelay(true)
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        builder.build()
    })
}

fn client_for(
    config: &S3Config,
    endpoint: Option<&str>,
    credentials: Option<Credentials>,
    http_client: SharedHttpClient,
) -> Client {
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new(config.region.clone()))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                // A stalled server must not hold a request (and the client behind it) for
                // minutes: each attempt gets 30 s, the whole operation with retries 75 s.
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(75))
                .build(),
        )
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    if let Some(credentials) = credentials {
        builder = builder.credentials_provider(SharedCredentialsProvider::new(credentials));
    }
    Client::from_conf(builder.build())
}

/// S3 error codes that mean "these credentials may not do this": a wrong secret or key id, a
/// revoked or expired token, a missing grant, a wrong region in the signature, a skewed clock.
/// None of them goes away by retrying.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "InvalidToken",
    "NotSignedUp",
    "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

fn s3_error<E>(operation: &str, err: SdkError<E, HttpResponse>) -> CoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = format!("{operation}: {}", DisplayErrorContext(&err));
    let code = err.as_service_error().and_then(|e| e.code());
    // HEAD requests carry no error body, so only their status says that access was refused.
    let status = err.raw_response().map(|r| r.status().as_u16());
    if code.is_some_and(|c| DENIED_CODES.contains(&c)) || matches!(status, Some(401 | 403)) {
        CoreError::ObjectStoreDenied(message)
    } else {
        CoreError::ObjectStore(message)
    }
}

impl S3ObjectStore {
    /// Build the clients (no network I/O); call [`S3ObjectStore::ensure_bucket`] to check the bucket.
    pub async fn new(config: &S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(CoreError::Config("S3_BUCKET_NAME is empty".into()));
        }
        let from_file = config
            .credentials_file
            .as_deref()
            .map(read_credentials_file)
            .transpose()?;
        let credentials = match (&config.access_key_id, &config.secret_access_key) {
            _ if from_file.is_some() => from_file.map(|keys| {
                Credentials::new(
                    keys.access_key_id,
                    keys.secret_access_key,
                    keys.session_token,
                    None,
                    "thumbnail-credentials-file",
                )
            }),
            (Some(id), Some(secret)) => Some(Credentials::new(id, secret, None, None, "thumbnail-config")),
            (None, None) => None,
            _ => {
                return Err(CoreError::Config(
                    "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".into(),
                ));
            }
        };
        // Without explicit keys, use the SDK's default chain (environment, profile, web identity, IMDS).
        let credentials = match credentials {
            Some(c) => Some(c),
            None => {
                let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                match shared.credentials_provider() {
                    Some(provider) => {
                        use aws_credential_types::provider::ProvideCredentials;
                        provider.provide_credentials().await.ok()
                    }
                    None => None,
                }
            }
        };
        let endpoint = config.endpoint_url.as_deref();
        let public = config.public_endpoint_url.as_deref().or(endpoint);
        let http_client = https_client();
        let client = client_for(config, endpoint, credentials.clone(), http_client.clone());
        let presigner = client_for(config, public, credentials, http_client);
        let endpoint_url = public
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));
        Ok(S3ObjectStore {
            client,
            presigner,
            bucket: config.bucket.clone(),
            endpoint_url,
        })
    }

    /// Check that the bucket exists, creating it when `create` is set.
    pub async fn ensure_bucket(&self, create: bool) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let missing = err.as_service_error().map(|e| e.is_not_found()).unwrap_or(false)
                    || err
                        .raw_response()
                        .map(|r| r.status().as_u16() == 404)
                        .unwrap_or(false);
                if missing && create {
                    match self.client.create_bucket().bucket(&self.bucket).send().await {
                        Ok(_) => Ok(()),
                        // Another replica created it in the meantime: S3 and MinIO answer
                        // BucketAlreadyOwnedByYou, others BucketAlreadyExists. It is fine if
                        // the bucket is there and ours now.
                        Err(err) => match self.client.head_bucket().bucket(&self.bucket).send().await {
                            Ok(_) => Ok(()),
                            Err(_) => Err(s3_error("create bucket", err)),
                        },
                    }
                } else if missing {
                    Err(CoreError::Config(format!(
                        "bucket '{}' does not exist",
                        self.bucket
                    )))
                } else {
                    Err(s3_error("head bucket", err))
                }
            }
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<()> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| CoreError::Internal(format!("reading {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error("put object", e))?;
        Ok(())
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("put object", e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err)
                if err
                    .as_service_error()
                    .map(|e| e.is_no_such_key())
                    .unwrap_or(false) =>
            {
                return Err(CoreError::ObjectNotFound(key.to_owned()));
            }
            Err(err) => return Err(s3_error("get object", err)),
        };
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| CoreError::ObjectStore(format!("get object body: {e}")))?;
        Ok(data.into_bytes())
    }

    async fn get_prefix(&self, key: &str, max_len: u64) -> Result<super::Prefix> {
        if max_len == 0 {
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
            return match head {
                Ok(out) => Ok(super::Prefix {
                    bytes: Bytes::new(),
                    total_size: out.content_length().unwrap_or(0).max(0) as u64,
                }),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
                    Err(CoreError::ObjectNotFound(key.to_owned()))
                }
                Err(err) => Err(s3_error("head object", err)),
            };
        }
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=0-{}", max_len - 1))
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(CoreError::ObjectNotFound(key.to_owned()));
            }
            // A range of an empty object cannot be satisfied (416): the object is empty.
            Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(super::Prefix {
                    bytes: Bytes::new(),
                    total_size: 0,
                });
            }
            Err(err) => return Err(s3_error("get object range", err)),
        };
        let total = out.content_range().and_then(super::content_range_total);
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        // A server that ignores the range sends the whole object with a 200: read no more than
        // asked for, and learn the size from Content-Length.
        let total_size = total.unwrap_or(length);
        let mut body = out.body;
        let mut bytes = bytes::BytesMut::with_capacity(max_len.min(total_size) as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| CoreError::ObjectStore(format!("get object body: {e}")))?
        {
            let room = (max_len as usize).saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() as u64 >= max_len {
                break;
            }
        }
        Ok(super::Prefix {
            bytes: bytes.freeze(),
            total_size,
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("delete object", e))?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().map(|e| e.is_not_found()).unwrap_or(false) => Ok(false),
            Err(err)
                if err
                    .raw_response()
                    .map(|r| r.status().as_u16() == 404)
                    .unwrap_or(false) =>
            {
                Ok(false)
            }
            Err(err) => Err(s3_error("head object", err)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<super::ObjectEntry>> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(limit.clamp(1, 1000) as i32);
        if let Some(after) = after {
            request = request.start_after(after);
        }
        let page = request.send().await.map_err(|e| s3_error("list objects", e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|object| {
                let modified = object.last_modified()?;
                Some(super::ObjectEntry {
                    key: object.key()?.to_owned(),
                    bytes: object.size().unwrap_or(0).max(0) as u64,
                    modified: chrono::DateTime::from_timestamp(modified.secs(), modified.subsec_nanos())?,
                })
            })
            .collect())
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| CoreError::Config(format!("presigned URL expiry: {e}")))?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| s3_error("presign", e))?;
        Ok(request.uri().to_owned())
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// One attempt with a short deadline: a readiness check must answer quickly even when the
    /// server accepts connections but does not respond (the other operations retry for longer).
    async fn ping(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .timeout_config(
                        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(3))
                            .operation_timeout(PING_TIMEOUT)
                            .build(),
                    )
                    .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| s3_error("head bucket", e))?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "s3"
    }
}
