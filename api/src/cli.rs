//! The `thumbnail-api` command line: `serve` (the default), `migrate`, `render`, `openapi`.
use crate::Application;
use crate::config::{ApiConfig, AuthMode, LimitArgs, LogArgs};
use crate::telemetry;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use thumbnail_core::apikeys::{self, Scopes};
use thumbnail_core::jobstore::{self, PostgresJobStore};

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
    Openapi {
        /// The document of a server with this AUTH_MODE (the committed api/openapi.json is
        /// api-key's).
        #[arg(long, value_enum, default_value_t = AuthMode::ApiKey)]
        auth_mode: AuthMode,
    },
    /// Manage API keys (AUTH_MODE=api-key), in the database of DATABASE_URL or DATA_DIR.
    Keys(KeysArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// Directory of the embedded default's SQLite database.
    #[arg(long, env = "DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// `postgres://…`; unset means SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once: only its hash is stored).
    Create {
        /// Who the key acts for (1-253 printable ASCII characters).
        #[arg(long)]
        owner: String,
        /// submit, read or admin; repeat for several (default: submit and read).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. 90d, 12h, 2w (default: none).
        #[arg(long)]
        expires: Option<String>,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
        /// Default `webhook_url` of the uploads made with the key (an upload's own wins).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// List keys (never their secrets), newest first.
    List {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a key by its id (it stops working within 5 s on every replica).
    Revoke { id: String },
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Input image (JPEG, PNG, WebP, GIF, HEIC, AVIF, JPEG XL, TIFF, BMP, ICO or SVG).
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
    /// jpeg, png, webp, avif or gif; default the input's format where it is written.
    #[arg(long)]
    pub format: Option<String>,
    /// What cover keeps: centre, north, south, east, west, northeast, northwest, southeast,
    /// southwest or smart.
    #[arg(long, default_value = "centre")]
    pub gravity: String,
    /// Keep the animation of an animated GIF or WebP.
    #[arg(long)]
    pub animated: bool,
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
        gravity: args
            .gravity
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--gravity")?,
        animated: args.animated,
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

/// `thumbnail-api keys ...`: the key goes to stdout (for `KEY=$(thumbnail-api keys create …)`),
/// everything else to stderr or as a table.
async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let url = match &args.database_url {
        Some(url) if !url.is_empty() => url.clone(),
        _ => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating {}", args.data_dir.display()))?;
            format!("sqlite://{}", args.data_dir.join("thumbnails.db").display())
        }
    };
    // Opening the job store applies the migrations, the key table's included.
    jobstore::connect(&url, 1).await.context("opening the database")?;
    let store = apikeys::connect(&url, 1).await.context("opening the key store")?;
    let now = thumbnail_core::model::now();
    match args.command {
        KeysCommand::Create {
            owner,
            scopes,
            expires,
            name,
            webhook_url,
        } => {
            apikeys::validate_owner(&owner).map_err(|e| anyhow::anyhow!("--owner: {e}"))?;
            let scopes = if scopes.is_empty() {
                Scopes::default_for_keys()
            } else {
                Scopes::parse_list(&scopes.join(" ")).map_err(|e| anyhow::anyhow!("--scope: {e}"))?
            };
            let expires_at = expires
                .as_deref()
                .map(apikeys::parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--expires: {e}"))?
                .map(|d| now + d);
            let webhook_url = webhook_url
                .as_deref()
                .map(thumbnail_core::webhooks::validate_url)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--webhook-url: {e}"))?;
            let mut generated = apikeys::generate(&owner, scopes, name, expires_at);
            generated.record.webhook_url = webhook_url;
            store.insert(&generated.record).await.context("storing the key")?;
            eprintln!(
                "created key {} for owner '{}' with scopes: {}{}; it is shown only now:",
                generated.record.id,
                owner,
                scopes,
                expires_at
                    .map(|at| format!(
                        ", expires {}",
                        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .unwrap_or_default()
            );
            println!("{}", generated.key);
        }
        KeysCommand::List { owner } => {
            let keys = store.list(owner.as_deref(), u32::MAX).await?;
            println!(
                "{:<12}  {:<8}  {:<20}  {:<17}  {:<20}  {:<20}  {:<20}  NAME",
                "ID", "STATE", "OWNER", "SCOPES", "CREATED", "LAST USED", "EXPIRES"
            );
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into())
            };
            for key in keys {
                println!(
                    "{:<12}  {:<8}  {:<20}  {:<17}  {:<20}  {:<20}  {:<20}  {}",
                    key.id,
                    key.state(now).as_str(),
                    key.owner,
                    key.scopes.to_string().replace(' ', ","),
                    at(Some(key.created_at)),
                    at(key.last_used_at),
                    at(key.expires_at),
                    key.name.as_deref().unwrap_or("-")
                );
            }
        }
        KeysCommand::Revoke { id } => match store.revoke(&id, now).await? {
            Some(key) => eprintln!("revoked key {} of owner '{}'", key.id, key.owner),
            None => anyhow::bail!("no key with id '{id}'"),
        },
    }
    Ok(())
}

async fn serve(config: ApiConfig, log: LogArgs) -> anyhow::Result<()> {
    telemetry::init(&log);
    let stopped = thumbnail_core::shutdown::shutdown_signal("shutting down");
    let app = Application::build(config).await.context("starting the API")?;
    app.run_until_stopped(stopped).await?;
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
        Some(Command::Openapi { auth_mode }) => {
            print!("{}", crate::openapi::openapi_json_for(auth_mode));
            Ok(())
        }
        Some(Command::Keys(args)) => runtime.block_on(keys(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
