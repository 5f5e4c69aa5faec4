//! The `thumbnail` command (see the `thumbnail-client` library).
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = thumbnail_client::cli::Cli::parse();
    ExitCode::from(thumbnail_client::commands::run(cli).await)
}
