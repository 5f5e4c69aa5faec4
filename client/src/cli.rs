//! The command line.
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "thumbnail",
    version,
    about = "Make thumbnails with a thumbnail service: upload, watch, download."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The service's base URL [env: THUMBNAIL_URL; config file: url; default http://127.0.0.1:8000]
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API key, sent as `Authorization: Bearer` [env: THUMBNAIL_API_KEY; config file: api_key]
    #[arg(long, global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Config file [default: thumbnail/config.toml in the user's config directory]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// How to print results: text for people, json for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputMode::Text)]
    pub output: OutputMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload images (files, or folders searched recursively), wait for their thumbnails and
    /// download them into --out.
    Upload(UploadArgs),
    /// One job's state.
    Status { job: String },
    /// Jobs, newest first.
    List {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        status: Option<JobState>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Download a finished job's thumbnail.
    Get {
        job: String,
        /// Where to write it.
        #[arg(short = 'o', long = "output-file")]
        output_file: PathBuf,
    },
    /// Follow a job until it finishes (long-poll), then print it.
    Watch { job: String },
    /// Manage API keys (needs an admin key).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobState {
    Pending,
    Started,
    Success,
    Failure,
}

impl JobState {
    pub fn as_api(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Started => "STARTED",
            JobState::Success => "SUCCESS",
            JobState::Failure => "FAILURE",
        }
    }
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Image files or folders.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub width: Option<u32>,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub height: Option<u32>,
    #[arg(long, value_parser = ["cover", "contain", "fill"])]
    pub fit: Option<String>,
    #[arg(long, value_parser = ["jpeg", "png", "webp"])]
    pub format: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Download the thumbnails into this folder (made if missing); without it, only the jobs'
    /// states are reported.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Files in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key; its secret is printed once.
    Create {
        /// Who the key acts for.
        owner: String,
        /// Scopes (submit, read, admin); default submit and read.
        #[arg(long = "scope", value_parser = ["submit", "read", "admin"])]
        scopes: Vec<String>,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Every key (never their secrets).
    List,
    /// Revoke a key by its id.
    Revoke { id: String },
}
