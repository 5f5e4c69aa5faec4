//! Settings both binaries read the same way (flags and environment variables): logging and the
//! engine's limits. Kept here so that the API, the operator and render Jobs agree on names and
//! defaults.
use clap::{Args, ValueEnum};
use thumbnail_engine::Limits;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Structured logs to stderr: text for people, JSON (one object per line) for log pipelines.
    pub fn init(&self) {
        let filter = EnvFilter::try_new(&self.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi);
        let _ = match self.log_format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init(),
            LogFormat::Text => builder.try_init(),
        };
    }
}

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest accepted upload or source object, in bytes (413 at the API).
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Largest accepted image, in pixels, read from the header before decoding (422 at the API).
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = 100_000_000)]
    pub max_image_pixels: u64,
    /// Most frames accepted in an animated image.
    #[arg(long, env = "MAX_IMAGE_FRAMES", default_value_t = 1000)]
    pub max_image_frames: u64,
    /// Memory one decode may use for pixel buffers, in bytes.
    #[arg(long, env = "MAX_DECODE_MEMORY_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub max_decode_memory_bytes: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        let limits = Limits::default();
        LimitArgs {
            max_upload_bytes: limits.max_input_bytes,
            max_image_pixels: limits.max_pixels,
            max_image_frames: limits.max_frames,
            max_decode_memory_bytes: limits.max_memory_bytes,
        }
    }
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_input_bytes: self.max_upload_bytes,
            max_pixels: self.max_image_pixels,
            max_frames: self.max_image_frames,
            max_memory_bytes: self.max_decode_memory_bytes,
        }
    }

    /// The same settings as environment variables (for render Jobs).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MAX_UPLOAD_BYTES", self.max_upload_bytes.to_string()),
            ("MAX_IMAGE_PIXELS", self.max_image_pixels.to_string()),
            ("MAX_IMAGE_FRAMES", self.max_image_frames.to_string()),
            (
                "MAX_DECODE_MEMORY_BYTES",
                self.max_decode_memory_bytes.to_string(),
            ),
        ]
    }
}

/// How long finished jobs are kept and how often the sweeper runs (see [`crate::retention`]), for
/// the API's sweeper and the operator leader's alike, so one ConfigMap sets both (the API adds its
/// upload-only MAX_RETENTION_SECONDS).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// How long a job is kept after its upload (an upload may ask for another lifetime with
    /// `retention_seconds`) or, for a ThumbnailJob written by hand, after the operator first saw
    /// it: then its thumbnails, links, ThumbnailJob (and render Job) and row are deleted, and the
    /// original when the service stored it.
    #[arg(long, env = "RETENTION_SECONDS", default_value_t = 7 * 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_seconds: u64,
    /// Time between retention sweeps (the API's also remove expired idempotency keys).
    #[arg(long, env = "RETENTION_SWEEP_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_sweep_seconds: u64,
    /// How long an expired job answers 410 Gone before it is forgotten (404).
    #[arg(long, env = "RETENTION_GONE_SECONDS", default_value_t = 86_400)]
    pub retention_gone_seconds: u64,
    /// Time between orphan scans: objects under the service's prefixes that no job row knows
    /// (a crash between storing an original and recording its job) are deleted.
    #[arg(long, env = "ORPHAN_SCAN_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub orphan_scan_seconds: u64,
    /// How old an object without a job row must be before the orphan scan deletes it.
    #[arg(long, env = "ORPHAN_GRACE_SECONDS", default_value_t = 3600)]
    pub orphan_grace_seconds: u64,
}

impl Default for RetentionArgs {
    fn default() -> Self {
        RetentionArgs {
            retention_seconds: 7 * 86_400,
            retention_sweep_seconds: 60,
            retention_gone_seconds: 86_400,
            orphan_scan_seconds: 3600,
            orphan_grace_seconds: 3600,
        }
    }
}

impl RetentionArgs {
    /// The policy; `max` only bounds what an upload may ask for (the operator has no uploads:
    /// the default).
    pub fn policy(&self) -> crate::retention::RetentionPolicy {
        use std::time::Duration;
        let default = Duration::from_secs(self.retention_seconds);
        crate::retention::RetentionPolicy {
            default,
            max: default,
            gone_grace: Duration::from_secs(self.retention_gone_seconds),
            sweep_every: Duration::from_secs(self.retention_sweep_seconds),
            orphan_scan_every: Duration::from_secs(self.orphan_scan_seconds),
            orphan_grace: Duration::from_secs(self.orphan_grace_seconds),
        }
    }
}
