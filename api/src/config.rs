//! Configuration: flags and environment variables. The names are the original service's where they
//! apply (`HOST`, `PORT`, `LOG_LEVEL`, `DATABASE_URL`, `S3_*`, `AWS_*`), so its Helm values and
//! secrets carry over.
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use thumbnail_core::objects::S3Config;
pub use thumbnail_core::settings::{LimitArgs, LogArgs, LogFormat};

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
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ApiConfig {
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
        config.long_poll_recheck_milliseconds = 250;
        config
    }
}
