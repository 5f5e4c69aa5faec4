//! Configuration: flags and environment variables. The names are the original service's where they
//! apply (`HOST`, `PORT`, `LOG_LEVEL`, `DATABASE_URL`, `S3_*`, `AWS_*`), so its Helm values and
//! secrets carry over.
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use thumbnail_core::objects::S3Config;
pub use thumbnail_core::settings::{LimitArgs, LogArgs, LogFormat, RetentionArgs};

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AuthMode {
    /// No authentication: the original contract. Anyone who can reach the API may upload, list
    /// every job and claim any `owner`. For local use and trusted networks.
    #[default]
    None,
    /// `Authorization: Bearer thn_…` or `X-API-Key: thn_…`, keys managed with
    /// `thumbnail-api keys` or `/api/v1/keys`.
    ApiKey,
    /// OIDC/JWT bearer tokens, verified against the issuer's JWKS.
    Jwt,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::ApiKey => "api-key",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// Authentication (`AUTH_MODE`) and what it protects.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// none (the original contract, anyone may do anything), api-key or jwt.
    #[arg(long, env = "AUTH_MODE", value_enum, default_value_t = AuthMode::None)]
    pub auth_mode: AuthMode,
    /// An API key (`thn_…`) registered at start-up with the admin scope for owner `admin`
    /// (api-key mode): the Helm chart's generated admin key. Only its hash is stored.
    #[arg(long, env = "ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,
    /// `/metrics` needs credentials with the admin scope.
    #[arg(long, env = "METRICS_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_auth: bool,
    /// `/docs` and `/openapi.json` need credentials.
    #[arg(long, env = "DOCS_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub docs_auth: bool,
    /// The tokens' issuer (`iss`), e.g. `https://login.example.com/realms/main` (jwt mode).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The audience tokens must be for (`aud`) (jwt mode).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The issuer's JWKS; unset: `jwks_uri` from `{JWT_ISSUER}/.well-known/openid-configuration`.
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// The claim that names the owner.
    #[arg(long, env = "JWT_OWNER_CLAIM", default_value = "sub")]
    pub jwt_owner_claim: String,
    /// The claim with the scopes (a space-separated string or an array): submit, read, admin.
    #[arg(long, env = "JWT_SCOPE_CLAIM", default_value = "scope")]
    pub jwt_scope_claim: String,
    /// Accepted signature algorithms (RS256, ES256, EdDSA; also RS384, RS512, PS256, PS384,
    /// PS512, ES384), comma-separated.
    #[arg(long, env = "JWT_ALGORITHMS", default_value = "RS256,ES256,EdDSA")]
    pub jwt_algorithms: String,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,
    /// The JWKS is fetched again at most this often when a token names an unknown key id.
    #[arg(long, env = "JWT_JWKS_REFRESH_SECONDS", default_value_t = 30)]
    pub jwt_jwks_refresh_seconds: u64,
    /// The JWKS is fetched again after this many seconds in any case (keys removed at the
    /// issuer stop working then).
    #[arg(long, env = "JWT_JWKS_MAX_AGE_SECONDS", default_value_t = 600)]
    pub jwt_jwks_max_age_seconds: u64,
}

/// Limits per owner (per client address without authentication) and for the whole service.
/// 0 turns a limit off.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// Uploads per minute of one owner (AUTH_MODE=none: one client address), as a token bucket.
    #[arg(long, env = "UPLOADS_PER_MINUTE", default_value_t = 600)]
    pub uploads_per_minute: u32,
    /// Uploads one owner (or client address) may make at once above the rate.
    #[arg(long, env = "UPLOAD_BURST", default_value_t = 60)]
    pub upload_burst: u32,
    /// Unfinished (PENDING or STARTED) jobs one owner may have (api-key and jwt modes).
    #[arg(long, env = "MAX_UNFINISHED_JOBS_PER_OWNER", default_value_t = 1000)]
    pub max_unfinished_jobs_per_owner: u64,
    /// Bytes of originals and thumbnails one owner may store (api-key and jwt modes).
    #[arg(long, env = "MAX_STORED_BYTES_PER_OWNER", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub max_stored_bytes_per_owner: u64,
    /// Unfinished jobs of everyone together; beyond it uploads get 503 at once.
    #[arg(long, env = "MAX_QUEUED_JOBS", default_value_t = 10_000)]
    pub max_queued_jobs: u64,
    /// Reverse proxies in front of the API that append to `X-Forwarded-For`: the client address
    /// (for AUTH_MODE=none's rate limit and the logs) is the one this many hops from the right.
    /// 0: the TCP peer.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
}

/// What one connection or request may take.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Time a client has to send a request's headers, from the connection's start or the first
    /// byte of a request on a kept-alive connection.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// An idle kept-alive connection is closed after this long.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_SECONDS", default_value_t = 75)]
    pub keep_alive_timeout_seconds: u64,
    /// Longest upload (the whole request body).
    #[arg(long, env = "UPLOAD_TIMEOUT_SECONDS", default_value_t = 300)]
    pub upload_timeout_seconds: u64,
    /// Slowest upload: after its first 10 seconds a request body must have arrived at this many
    /// bytes per second on average (0: no minimum).
    #[arg(long, env = "UPLOAD_MIN_BYTES_PER_SECOND", default_value_t = 10 * 1024)]
    pub upload_min_bytes_per_second: u64,
    /// Longest render of one job, all its thumbnails together (embedded runner); 0: no limit.
    #[arg(long, env = "RENDER_TIMEOUT_SECONDS", default_value_t = 60)]
    pub render_timeout_seconds: u64,
    /// Attempts a job may start before it fails (embedded runner): attempts that crash the
    /// process, panic or time out count; attempts that end because S3 or the database is down
    /// do not.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
}

/// Who runs the jobs the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum JobRunnerKind {
    /// The API runs jobs itself on an in-process worker pool (no cluster needed).
    #[default]
    Embedded,
    /// The API creates a ThumbnailJob resource per upload; the operator runs it.
    Kubernetes,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the embedded default's SQLite database, objects, spooled uploads and
    /// signing key.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Job store: `postgres://user:pass@host/db`; unset means SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Maximum connections in the database pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// S3 endpoint this process uses (e.g. `http://minio:9000`); unset for AWS S3.
    #[arg(long, env = "S3_ENDPOINT_URL")]
    pub s3_endpoint_url: Option<String>,
    /// S3 endpoint that presigned URLs are signed for: the one clients can reach. Defaults to
    /// S3_ENDPOINT_URL.
    #[arg(long, env = "S3_PUBLIC_ENDPOINT_URL")]
    pub s3_public_endpoint_url: Option<String>,
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Bucket for originals and thumbnails; unset means the local object directory.
    #[arg(long, env = "S3_BUCKET_NAME")]
    pub s3_bucket_name: Option<String>,
    /// Prefix for every object key (e.g. `tenant-a/`).
    #[arg(long, env = "S3_KEY_PREFIX", default_value = "")]
    pub s3_key_prefix: String,
    /// Create the bucket at start-up when it does not exist.
    #[arg(long, env = "S3_CREATE_BUCKET", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_create_bucket: bool,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// File with `AWS_ACCESS_KEY_ID=…` and `AWS_SECRET_ACCESS_KEY=…` lines (a mounted Secret);
    /// takes precedence over the two variables.
    #[arg(long, env = "S3_CREDENTIALS_FILE")]
    pub s3_credentials_file: Option<PathBuf>,
}

impl StoreArgs {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("thumbnails.db").display()),
        }
    }

    pub fn s3_config(&self) -> Option<S3Config> {
        let bucket = self.s3_bucket_name.clone().filter(|b| !b.is_empty())?;
        Some(S3Config {
            endpoint_url: self.s3_endpoint_url.clone().filter(|s| !s.is_empty()),
            public_endpoint_url: self.s3_public_endpoint_url.clone().filter(|s| !s.is_empty()),
            region: self.s3_region.clone(),
            bucket,
            access_key_id: self.aws_access_key_id.clone().filter(|s| !s.is_empty()),
            secret_access_key: self.aws_secret_access_key.clone().filter(|s| !s.is_empty()),
            credentials_file: self
                .s3_credentials_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            create_bucket: self.s3_create_bucket,
        })
    }
}

/// Everything `thumbnail-api serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Base URL clients use to reach this API, for `Location` headers and the embedded default's
    /// download links. Defaults to `http://localhost:{PORT}`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Secret for the embedded default's signed download links; unset means a key generated
    /// once and kept in the data directory.
    #[arg(long, env = "SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Lifetime of download links (presigned or signed), in seconds.
    #[arg(long, env = "URL_EXPIRY_SECONDS", default_value_t = 3600)]
    pub url_expiry_seconds: u64,
    /// Jobs processed at once by the embedded runner; 0 means one per CPU.
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// On SIGTERM/Ctrl-C, how long running jobs may take to finish before the process exits
    /// (unfinished jobs resume at the next start).
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Who runs jobs: this process (`embedded`) or the operator via ThumbnailJob resources.
    #[arg(long, env = "JOB_RUNNER", value_enum, default_value_t = JobRunnerKind::Embedded)]
    pub job_runner: JobRunnerKind,
    /// Namespace the API creates ThumbnailJob resources in (kubernetes runner); the operator's
    /// WATCH_NAMESPACE when it has one (the chart sets both from one value).
    #[arg(long, env = "KUBE_NAMESPACE", default_value = "default")]
    pub kube_namespace: String,
    /// `ttlSecondsAfterFinished` of the ThumbnailJobs the API creates: the operator deletes each
    /// that long after it finished (its thumbnails and job row stay, so the REST API still
    /// answers for it). 0 keeps them.
    #[arg(long, env = "KUBE_TTL_SECONDS_AFTER_FINISHED", default_value_t = 3600)]
    pub kube_ttl_seconds_after_finished: u32,
    /// `activeDeadlineSeconds` of the ThumbnailJobs the API creates: a job not finished this long
    /// after it started fails with reason DeadlineExceeded.
    #[arg(long, env = "KUBE_ACTIVE_DEADLINE_SECONDS", default_value_t = 900)]
    pub kube_active_deadline_seconds: u32,
    /// Kubernetes API URL without authentication (tests, `kubectl proxy`); unset means the
    /// in-cluster configuration or kubeconfig (kubernetes runner).
    #[arg(long, env = "KUBE_API_URL", hide = true)]
    pub kube_url: Option<String>,
    /// Uploads whose `Content-Length` is at most this many bytes are read into memory instead of
    /// a spool file: they go to the object store from memory and on to the in-process worker
    /// (see HANDOFF_BUDGET_BYTES). Bigger or unsized uploads always stream through a spool file.
    #[arg(long, env = "IN_MEMORY_UPLOAD_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub in_memory_upload_bytes: u64,
    /// Memory for originals that in-memory uploads leave for this process's workers (embedded
    /// runner), so they need not read them back from the object store; the oldest are dropped
    /// first when it is full (their jobs then read the store). 0 turns the handoff off.
    #[arg(long, env = "HANDOFF_BUDGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub handoff_budget_bytes: u64,
    /// The longest `retention_seconds` an upload may ask for (RETENTION_SECONDS is the default).
    #[arg(long, env = "MAX_RETENTION_SECONDS", default_value_t = 30 * 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_retention_seconds: u64,
    /// Most images in one batch upload (`POST /api/v1/batches/`).
    #[arg(long, env = "MAX_BATCH_IMAGES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_batch_images: u32,
    /// Most bytes of images in one batch upload, all images together (each is also bounded by
    /// MAX_UPLOAD_BYTES). Bounds the spool space one request can take.
    #[arg(long, env = "MAX_BATCH_BYTES", default_value_t = 512 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_bytes: u64,
    /// How long an `Idempotency-Key` of an upload is kept: a repeat within this time answers with
    /// the first request's job.
    #[arg(long, env = "IDEMPOTENCY_KEY_TTL_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(1..))]
    pub idempotency_key_ttl_seconds: u32,
    /// How long start-up waits for the database and object store before giving up.
    #[arg(long, env = "STARTUP_TIMEOUT_SECONDS", default_value_t = 300)]
    pub startup_timeout_seconds: u64,
    /// While a long-poll (`?wait=`) waits, how often it re-reads its job from the store anyway,
    /// in case a finish was not announced to this process. Hidden: tests raise it far above
    /// their bounds to prove that the answer comes from the finish itself.
    #[arg(
        long,
        env = "LONG_POLL_RECHECK_MILLISECONDS",
        default_value_t = 250,
        hide = true
    )]
    pub long_poll_recheck_milliseconds: u64,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Shared with the operator, which sweeps with the same settings.
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Completion webhooks (see README "Webhooks").
#[derive(Clone, Args)]
pub struct WebhookArgs {
    /// Signing secret of completion webhooks: `whsec_` and base64 (Standard Webhooks). Several,
    /// separated by spaces or commas, during a rotation (each signs; the new one first). Unset:
    /// uploads naming a `webhook_url` are refused and nothing is delivered.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Per-attempt timeout of a webhook delivery, in seconds.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_seconds: u64,
    /// Delays of the delivery attempts (ms, s, m, h), the first one 0 (as soon as the job ends),
    /// each later one after the previous attempt failed; its length is the number of attempts.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", default_value = thumbnail_core::webhooks::schedule::DEFAULT_SCHEDULE)]
    pub webhook_retry_schedule: String,
    /// Networks webhooks may reach although they are internal (loopback, private, link-local,
    /// ...), comma-separated, e.g. `10.20.0.0/16`. Empty: only public addresses.
    #[arg(long, env = "WEBHOOK_ALLOW_CIDRS", default_value = "")]
    pub webhook_allow_cidrs: String,
}

// By hand: the secret is never printed.
impl std::fmt::Debug for WebhookArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookArgs")
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_timeout_seconds", &self.webhook_timeout_seconds)
            .field("webhook_retry_schedule", &self.webhook_retry_schedule)
            .field("webhook_allow_cidrs", &self.webhook_allow_cidrs)
            .finish()
    }
}

impl WebhookArgs {
    /// The dispatcher's settings; `None` when no secret is configured (webhooks off).
    /// Errors name the variable, never the secret.
    pub fn settings(&self) -> Result<Option<thumbnail_core::webhooks::dispatcher::Settings>, String> {
        use thumbnail_core::webhooks::{schedule::RetrySchedule, signature::Secrets, ssrf::AllowList};
        let schedule = RetrySchedule::parse(&self.webhook_retry_schedule)
            .map_err(|e| format!("WEBHOOK_RETRY_SCHEDULE: {e}"))?;
        let allow =
            AllowList::parse(&self.webhook_allow_cidrs).map_err(|e| format!("WEBHOOK_ALLOW_CIDRS: {e}"))?;
        let Some(raw) = self.webhook_secret.as_deref().filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let secrets = Secrets::parse(raw).map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
        Ok(Some(thumbnail_core::webhooks::dispatcher::Settings {
            secrets,
            schedule,
            timeout: Duration::from_secs(self.webhook_timeout_seconds),
            allow,
            poll: Duration::from_millis(500),
        }))
    }
}

impl ApiConfig {
    pub fn retention_policy(&self) -> thumbnail_core::retention::RetentionPolicy {
        let shared = self.retention.policy();
        let max = Duration::from_secs(self.max_retention_seconds);
        thumbnail_core::retention::RetentionPolicy {
            default: shared.default.min(max),
            max,
            ..shared
        }
    }
    pub fn url_expiry(&self) -> Duration {
        Duration::from_secs(self.url_expiry_seconds)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
    pub fn long_poll_recheck(&self) -> Duration {
        Duration::from_millis(self.long_poll_recheck_milliseconds.max(1))
    }
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.workers
        }
    }

    /// Defaults for tests and embedding: a free port on loopback, the given data directory.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ApiConfig,
        }
        // Parse from an empty command line, ignoring the environment's values would be ideal, but
        // clap always reads `env`; tests set what they need explicitly after this.
        let mut config = Wrapper::parse_from(["thumbnail-api"]).config;
        config.host = "127.0.0.1".into();
        config.port = 0;
        config.public_url = None;
        config.store = StoreArgs {
            data_dir: data_dir.into(),
            database_url: None,
            database_max_connections: 8,
            s3_endpoint_url: None,
            s3_public_endpoint_url: None,
            s3_region: "us-east-1".into(),
            s3_bucket_name: None,
            s3_key_prefix: String::new(),
            s3_create_bucket: false,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            s3_credentials_file: None,
        };
        config.limits = LimitArgs {
            max_upload_bytes: 25 * 1024 * 1024,
            max_image_pixels: 100_000_000,
            max_image_frames: 1000,
            max_decode_memory_bytes: 1024 * 1024 * 1024,
        };
        config.url_expiry_seconds = 3600;
        config.job_runner = JobRunnerKind::Embedded;
        config.kube_url = None;
        config.kube_namespace = "default".into();
        config.kube_ttl_seconds_after_finished = 3600;
        config.kube_active_deadline_seconds = 900;
        config.signing_key = None;
        config.workers = 2;
        config.shutdown_grace_seconds = 10;
        config.startup_timeout_seconds = 30;
        config.in_memory_upload_bytes = 2 * 1024 * 1024;
        config.handoff_budget_bytes = 64 * 1024 * 1024;
        config.auth = AuthArgs {
            auth_mode: AuthMode::None,
            admin_api_key: None,
            metrics_auth: false,
            docs_auth: false,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_jwks_url: None,
            jwt_owner_claim: "sub".into(),
            jwt_scope_claim: "scope".into(),
            jwt_algorithms: "RS256,ES256,EdDSA".into(),
            jwt_leeway_seconds: 30,
            jwt_jwks_refresh_seconds: 30,
            jwt_jwks_max_age_seconds: 600,
        };
        // Generous: tests that exercise a limit set it themselves.
        config.quotas = QuotaArgs {
            uploads_per_minute: 60_000,
            upload_burst: 10_000,
            max_unfinished_jobs_per_owner: 1000,
            max_stored_bytes_per_owner: 10 * 1024 * 1024 * 1024,
            max_queued_jobs: 10_000,
            trusted_proxy_hops: 0,
        };
        config.edge = EdgeArgs {
            max_connections: 1024,
            header_read_timeout_seconds: 10,
            keep_alive_timeout_seconds: 75,
            upload_timeout_seconds: 300,
            upload_min_bytes_per_second: 10 * 1024,
            render_timeout_seconds: 60,
            max_attempts: 5,
        };
        config.long_poll_recheck_milliseconds = 250;
        config.webhooks = WebhookArgs {
            webhook_secret: None,
            webhook_timeout_seconds: 15,
            webhook_retry_schedule: thumbnail_core::webhooks::schedule::DEFAULT_SCHEDULE.into(),
            webhook_allow_cidrs: String::new(),
        };
        config
    }
}
