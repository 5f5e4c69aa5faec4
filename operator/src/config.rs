//! Configuration from flags and environment variables. The names are the ones the Helm chart passes
//! (`templates/operator-deployment.yaml`, the shared ConfigMap and Secret), and the S3/database
//! names are the API's, so that both read the same ConfigMap and Secret.
use clap::Args;
use std::time::Duration;
use thumbnail_core::objects::S3Config;
pub use thumbnail_core::settings::{LimitArgs, LogArgs, LogFormat, RetentionArgs};
use thumbnail_engine::ImageFormat;

/// The object store (S3 only: the operator and its render Jobs run in a cluster).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint (e.g. `http://minio:9000`); unset for AWS S3.
    #[arg(long, env = "S3_ENDPOINT_URL")]
    pub s3_endpoint_url: Option<String>,
    /// Endpoint presigned URLs are signed for (not used by the operator itself; passed on).
    #[arg(long, env = "S3_PUBLIC_ENDPOINT_URL")]
    pub s3_public_endpoint_url: Option<String>,
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Bucket thumbnails are written to, and sources are read from unless a ThumbnailJob names
    /// another one.
    #[arg(long, env = "S3_BUCKET_NAME", default_value = "")]
    pub s3_bucket_name: String,
    /// Prefix of every object key the operator writes (thumbnails, render results).
    #[arg(long, env = "S3_KEY_PREFIX", default_value = "")]
    pub s3_key_prefix: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// File with `AWS_ACCESS_KEY_ID=…` and `AWS_SECRET_ACCESS_KEY=…` lines (a mounted Secret).
    #[arg(long, env = "S3_CREDENTIALS_FILE")]
    pub s3_credentials_file: Option<std::path::PathBuf>,
}

impl S3Args {
    /// The store settings for `bucket` (the configured one unless given).
    pub fn s3_config(&self, bucket: Option<&str>) -> S3Config {
        S3Config {
            endpoint_url: self.s3_endpoint_url.clone().filter(|s| !s.is_empty()),
            public_endpoint_url: self.s3_public_endpoint_url.clone().filter(|s| !s.is_empty()),
            region: self.s3_region.clone(),
            bucket: bucket.unwrap_or(&self.s3_bucket_name).to_owned(),
            access_key_id: self.aws_access_key_id.clone().filter(|s| !s.is_empty()),
            secret_access_key: self.aws_secret_access_key.clone().filter(|s| !s.is_empty()),
            credentials_file: self
                .s3_credentials_file
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            create_bucket: false,
        }
    }
}

/// Everything the controller process needs.
#[derive(Debug, Clone, Args)]
pub struct OperatorConfig {
    /// Address of the health and metrics server.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port of `/healthz`, `/readyz` and `/metrics` (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8081)]
    pub port: u16,
    /// Namespace to reconcile ThumbnailJobs in; empty means every namespace.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
    /// Images rendered at once inside the operator (the inline pool).
    #[arg(long, env = "INLINE_CONCURRENCY", default_value_t = 2)]
    pub inline_concurrency: usize,
    /// Reconciles run at once (inline renders beyond INLINE_CONCURRENCY wait for the pool).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,
    /// Images above this many pixels (x frames) are rendered in a batch/v1 Job, also when a
    /// ThumbnailJob asks for `execution: inline`: the operator's memory limit must hold
    /// INLINE_CONCURRENCY renders of this size (see `plan::render_memory_bytes`).
    #[arg(long, env = "JOB_PIXEL_THRESHOLD", default_value_t = 24_000_000)]
    pub job_pixel_threshold: u64,
    /// Buckets a ThumbnailJob may name in `spec.source.bucket` (comma-separated). The configured
    /// S3_BUCKET_NAME is always allowed; no other bucket is unless listed here, so that a
    /// namespace editor cannot make the operator read whatever its credentials reach.
    #[arg(long, env = "SOURCE_BUCKETS", value_delimiter = ',', default_value = "")]
    pub source_buckets: Vec<String>,
    /// With `execution: auto`, source formats always rendered in a batch/v1 Job
    /// (comma-separated: jpeg, png, webp, gif).
    #[arg(long, env = "RISKY_FORMATS", value_delimiter = ',', default_value = "")]
    pub risky_formats: Vec<String>,
    /// Image of render Jobs (it must contain `thumbnail-operator`).
    #[arg(long, env = "RENDER_IMAGE", default_value = "thumbnail:latest")]
    pub render_image: String,
    /// ServiceAccount of render Jobs (one without API access).
    #[arg(long, env = "RENDER_SERVICE_ACCOUNT", default_value = "")]
    pub render_service_account: String,
    /// Secret (in POD_NAMESPACE, where render Jobs run) holding `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` for render Jobs. Required when the operator itself uses static
    /// keys: credentials are never written into a Job spec. Unset without static keys: render
    /// pods use the ambient credentials (e.g. IAM roles for service accounts).
    #[arg(long, env = "RENDER_CREDENTIALS_SECRET", default_value = "")]
    pub render_credentials_secret: String,
    /// `ttlSecondsAfterFinished` of render Jobs: the Job controller deletes a finished render Job
    /// (and its pods) after this long, also if the operator is gone. The operator deletes them
    /// itself once it has read their result.
    #[arg(long, env = "RENDER_JOB_TTL_SECONDS", default_value_t = 600)]
    pub render_job_ttl_seconds: i32,
    /// A render Job whose pod has not started this long after the Job was created (pods that
    /// cannot be created: a missing ServiceAccount, a quota; pods that cannot run: a missing
    /// Secret, an image that cannot be pulled, nowhere to schedule) fails its ThumbnailJob with
    /// the cause.
    #[arg(long, env = "RENDER_START_TIMEOUT_SECONDS", default_value_t = 120)]
    pub render_start_timeout_seconds: u64,
    /// Memory added to the estimate from the image size for a render Job, in bytes.
    #[arg(long, env = "RENDER_MEMORY_OVERHEAD_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub render_memory_overhead_bytes: u64,
    /// CPU request of a render Job (Kubernetes quantity).
    #[arg(long, env = "RENDER_CPU_REQUEST", default_value = "250m")]
    pub render_cpu_request: String,
    /// Whether replicas elect a leader with a coordination.k8s.io Lease (only the leader works).
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease, in POD_NAMESPACE.
    #[arg(long, env = "LEASE_NAME", default_value = "thumbnail-operator")]
    pub lease_name: String,
    /// How long a Lease stays valid without renewal, in seconds.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15.0)]
    pub lease_duration_seconds: f64,
    /// How often the leader renews the Lease, in seconds.
    #[arg(long, env = "LEASE_RENEW_SECONDS", default_value_t = 5.0)]
    pub lease_renew_seconds: f64,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,
    /// Kubernetes API URL without authentication (tests, `kubectl proxy`); unset means the
    /// in-cluster configuration or kubeconfig.
    #[arg(long, env = "KUBE_API_URL", hide = true)]
    pub kube_api_url: Option<String>,
    /// Job store: `postgres://user:pass@host/db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "")]
    pub database_url: String,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
    /// On SIGTERM, how long running inline renders may take to finish; what is still running then
    /// is handed back (not counted as an attempt) for the next replica. Keep it below the pod's
    /// terminationGracePeriodSeconds (the chart does).
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// How long start-up waits for the database and object store.
    #[arg(long, env = "STARTUP_TIMEOUT_SECONDS", default_value_t = 300)]
    pub startup_timeout_seconds: u64,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Retention: the leader sweeps expired jobs (their ThumbnailJobs included), as the API does.
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl OperatorConfig {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs_f64(self.lease_duration_seconds.max(0.1))
    }

    pub fn lease_renew(&self) -> Duration {
        Duration::from_secs_f64(self.lease_renew_seconds.max(0.05))
    }

    /// The buckets `spec.source.bucket` may name: S3_BUCKET_NAME and SOURCE_BUCKETS.
    pub fn allowed_source_buckets(&self) -> Vec<String> {
        let mut buckets = vec![self.s3.s3_bucket_name.clone()];
        for bucket in &self.source_buckets {
            let bucket = bucket.trim();
            if !bucket.is_empty() && !buckets.iter().any(|b| b == bucket) {
                buckets.push(bucket.to_owned());
            }
        }
        buckets
    }

    /// Whether the operator's own S3 access uses static keys (variables or a credentials file):
    /// render Jobs then need RENDER_CREDENTIALS_SECRET.
    pub fn uses_static_keys(&self) -> bool {
        self.s3
            .aws_access_key_id
            .as_deref()
            .is_some_and(|k| !k.is_empty())
            || self
                .s3
                .s3_credentials_file
                .as_ref()
                .is_some_and(|p| !p.as_os_str().is_empty())
    }

    /// The identity written to the Lease: POD_NAME, else the host name and process id.
    pub fn identity(&self) -> String {
        if !self.pod_name.is_empty() {
            return self.pod_name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    }

    /// Parsed RISKY_FORMATS; unknown names are ignored.
    pub fn risky_formats(&self) -> Vec<ImageFormat> {
        self.risky_formats
            .iter()
            .filter_map(|f| match f.trim().to_ascii_lowercase().as_str() {
                "jpeg" | "jpg" => Some(ImageFormat::Jpeg),
                "png" => Some(ImageFormat::Png),
                "webp" => Some(ImageFormat::Webp),
                "gif" => Some(ImageFormat::Gif),
                _ => None,
            })
            .collect()
    }

    /// Defaults for tests: loopback on a free port, the given database and S3 settings, short
    /// leases.
    pub fn for_tests(database_url: &str, s3: S3Args) -> Self {
        OperatorConfig {
            host: "127.0.0.1".into(),
            port: 0,
            watch_namespace: String::new(),
            inline_concurrency: 2,
            max_concurrent_reconciles: 16,
            job_pixel_threshold: 24_000_000,
            source_buckets: Vec::new(),
            risky_formats: Vec::new(),
            render_image: "thumbnail:test".into(),
            render_service_account: "thumbnail-render".into(),
            render_credentials_secret: "thumbnail-render-credentials".into(),
            render_job_ttl_seconds: 600,
            render_start_timeout_seconds: 120,
            shutdown_grace_seconds: 20,
            render_memory_overhead_bytes: 128 * 1024 * 1024,
            render_cpu_request: "250m".into(),
            leader_election: false,
            lease_name: "thumbnail-operator".into(),
            lease_duration_seconds: 2.0,
            lease_renew_seconds: 0.25,
            pod_name: String::new(),
            pod_namespace: "default".into(),
            kube_api_url: None,
            database_url: database_url.to_owned(),
            database_max_connections: 4,
            startup_timeout_seconds: 30,
            s3,
            limits: LimitArgs {
                max_upload_bytes: 25 * 1024 * 1024,
                max_image_pixels: 100_000_000,
                max_image_frames: 1000,
                max_decode_memory_bytes: 1024 * 1024 * 1024,
            },
            retention: RetentionArgs::default(),
            log: LogArgs {
                log_level: "info".into(),
                log_format: LogFormat::Text,
            },
        }
    }

    /// The environment of render Jobs: the operator's own S3 settings, limits and logging. Never
    /// credentials: those come from RENDER_CREDENTIALS_SECRET (see `plan::render_job`).
    pub fn render_env(&self) -> Vec<(String, String)> {
        let s3 = &self.s3;
        let mut env: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
        if let Some(e) = s3.s3_endpoint_url.as_deref().filter(|s| !s.is_empty()) {
            push("S3_ENDPOINT_URL", e);
        }
        push("S3_REGION", &s3.s3_region);
        push("S3_BUCKET_NAME", &s3.s3_bucket_name);
        push("S3_KEY_PREFIX", &s3.s3_key_prefix);
        for (k, v) in self.limits.env() {
            push(k, &v);
        }
        push("LOG_LEVEL", &self.log.log_level);
        push(
            "LOG_FORMAT",
            match self.log.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
        );
        env
    }
}
