//! The `thumbnail-operator` command line: run the controller (the default), or `render` one plan
//! (what render Jobs run).
use crate::config::{LimitArgs, LogArgs, OperatorConfig, S3Args};
use crate::plan::RenderPlan;
use crate::{Operator, Stopped};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "thumbnail-operator",
    version,
    about = "Reconciles ThumbnailJob resources; `render` runs one render (inside a Job)"
)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: OperatorConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default when no command is given).
    Run {
        #[command(flatten)]
        config: Box<OperatorConfig>,
    },
    /// Render one plan: read the source from S3, write every thumbnail and a result object.
    /// Exit code 0 on success, 2 for input that can never be rendered, 1 otherwise.
    Render(Box<RenderArgs>),
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The render plan (JSON), as the operator writes it into the Job.
    #[arg(long)]
    pub plan: String,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn init_logging(args: &LogArgs) {
    args.init();
}

async fn run(config: OperatorConfig) -> anyhow::Result<Stopped> {
    init_logging(&config.log);
    let stopped = thumbnail_core::shutdown::shutdown_signal("shutting down (running renders finish first)");
    let operator = Operator::build(config).await.context("starting the operator")?;
    operator.run(stopped).await
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match cli.command {
        Some(Command::Render(args)) => {
            let RenderArgs {
                plan,
                s3,
                limits,
                log,
            } = *args;
            init_logging(&log);
            let plan: RenderPlan = match serde_json::from_str(&plan) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: --plan is not a render plan: {e}");
                    return ExitCode::FAILURE;
                }
            };
            crate::install_crypto_provider();
            let code = runtime.block_on(crate::render::render_command(&plan, &s3, &limits));
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Some(Command::Run { config }) => config,
        None => Box::new(cli.run),
    };
    match runtime.block_on(run(*config)) {
        Ok(Stopped::Shutdown) => ExitCode::SUCCESS,
        // Exit non-zero so that the pod restarts and queues for the Lease again.
        Ok(Stopped::LeaseLost) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn render_needs_no_controller_settings() {
        let cli = Cli::try_parse_from([
            "thumbnail-operator",
            "render",
            "--plan",
            "{}",
            "--s3-bucket-name",
            "b",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Render(_))));
        let cli = Cli::try_parse_from([
            "thumbnail-operator",
            "--database-url",
            "postgres://x/y",
            "--s3-bucket-name",
            "b",
            "--leader-election",
            "false",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert!(!cli.run.leader_election);
    }
}
