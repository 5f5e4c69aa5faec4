//! `thumbnail`, the command-line client: upload files and folders with a progress bar, wait for
//! the jobs (long-poll), download the thumbnails, and look at jobs and API keys.
//!
//! Settings come from flags, then the environment (`THUMBNAIL_URL`, `THUMBNAIL_API_KEY`), then
//! the config file ([`config::Settings`]). Exit codes: 0 every job succeeded, 1 some did not,
//! 2 bad usage or configuration, 3 the service could not be used, 130 interrupted (Ctrl-C).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod report;
pub mod upload;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot reach the service at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the service answered {status}: {detail}")]
    Refused { status: u16, detail: String },
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) | ClientError::Config(_) => 2,
            _ => 3,
        }
    }
}

/// Exit codes (see the crate documentation).
pub mod exit {
    pub const OK: u8 = 0;
    pub const SOME_FAILED: u8 = 1;
    pub const INTERRUPTED: u8 = 130;
}
