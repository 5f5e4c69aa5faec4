//! The `thumbnail-api` command line: `serve` (the default), `migrate`, `render`, `openapi`.
use crate::Application;
use crate::config::{ApiConfig, LimitArgs, LogArgs};
use crate::telemetry;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use thumbnail_core::jobstore::PostgresJobStore;

#[derive(Debug, Parser)]
#[command(
    name = "thumbnail-api",
    version,
    about = "Thumbnail service: REST API (and, by default, its job runner)"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ApiConfig,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default when no command is given).
    Serve {
        #[command(flatten)]
        config: Box<ApiConfig>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Apply the database migrations and exit (for operators who migrate separately).
    Migrate {
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Make a thumbnail of a local file with the API's options and limits.
    Render(RenderArgs),
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Input image (JPEG, PNG, WebP or GIF).
    pub input: PathBuf,
    /// Output file; `-` writes to stdout.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub width: u32,
    #[arg(long, default_value_t = 100)]
    pub height: u32,
    /// cover, contain or fill.
    #[arg(long, default_value = "cover")]
    pub fit: String,
    /// jpeg, png or webp; default the input's format.
    #[arg(long)]
    pub format: Option<String>,
    #[arg(long, default_value_t = 80)]
    pub quality: u8,
    #[arg(long)]
    pub upscale: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Exit code of `render` for input that can never succeed (the operator's podFailurePolicy
/// matches it to fail a Job at once instead of retrying).
pub const EXIT_BAD_INPUT: u8 = 2;

pub fn render(args: &RenderArgs) -> anyhow::Result<Result<String, thumbnail_engine::EngineError>> {
    let options = thumbnail_engine::ThumbnailOptions {
        width: args.width,
        height: args.height,
        fit: args.fit.parse().map_err(anyhow::Error::msg).context("--fit")?,
        format: args
            .format
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("--format")?,
        quality: args.quality,
        upscale: args.upscale,
    };
    options.validate().map_err(|e| anyhow::anyhow!("--{e}"))?;
    let limits = args.limits.limits();
    let size = std::fs::metadata(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?
        .len();
    if size > limits.max_input_bytes {
        return Ok(Err(thumbnail_engine::EngineError::FileTooLarge {
            size,
            max: limits.max_input_bytes,
        }));
    }
    let bytes = std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let thumbnail = match thumbnail_engine::render(&bytes, &options, &limits) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    if args.output.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&thumbnail.bytes)?;
    } else {
        std::fs::write(&args.output, &thumbnail.bytes)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    Ok(Ok(serde_json::json!({
        "width": thumbnail.width,
        "height": thumbnail.height,
        "format": thumbnail.format.as_str(),
        "bytes": thumbnail.bytes.len(),
    })
    .to_string()))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

async fn serve(config: ApiConfig, log: LogArgs) -> anyhow::Result<()> {
    telemetry::init(&log);
    let app = Application::build(config).await.context("starting the API")?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// kube and the AWS SDK bring different rustls crypto providers; with both compiled in, rustls
/// cannot pick one by itself, so the process installs one default before any client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn main() -> ExitCode {
    install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        None => runtime.block_on(serve(cli.serve, cli.log)),
        Some(Command::Serve { config, log }) => runtime.block_on(serve(*config, log)),
        Some(Command::Migrate { database_url }) => runtime.block_on(async {
            telemetry::init(&cli.log);
            PostgresJobStore::migrate(&database_url)
                .await
                .context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }),
        Some(Command::Render(args)) => match render(&args) {
            Ok(Ok(summary)) => {
                eprintln!("{summary}");
                Ok(())
            }
            Ok(Err(bad_input)) => {
                eprintln!("error: {bad_input} ({})", bad_input.reason());
                return ExitCode::from(if bad_input.is_bad_input() {
                    EXIT_BAD_INPUT
                } else {
                    1
                });
            }
            Err(e) => Err(e),
        },
        Some(Command::Openapi) => {
            print!("{}", crate::openapi::openapi_json());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
