//! What each subcommand does: settings → connect → act → print → exit code.
use crate::api::{Api, RenderOptions};
use crate::cli::{Cli, Command, KeysCommand, OutputMode, UploadArgs};
use crate::upload::{Progress, UploadPlan};
use crate::{ClientError, config, exit, report, upload};
use serde::Serialize;
use std::io::IsTerminal;
use tokio_util::sync::CancellationToken;

/// Run the command; returns the exit code. Errors are printed here (to stderr; in JSON mode as
/// `{"error": …}` on stdout too, so that scripts always get JSON).
pub async fn run(cli: Cli) -> u8 {
    let mode = cli.global.output;
    match execute(cli).await {
        Ok(code) => code,
        Err(err) => {
            if mode == OutputMode::Json {
                println!("{}", serde_json::json!({ "error": err.to_string() }));
            }
            eprintln!("thumbnail: {err}");
            err.exit_code()
        }
    }
}

async fn execute(cli: Cli) -> Result<u8, ClientError> {
    let settings = config::load(cli.global.url, cli.global.api_key, cli.global.config.as_deref())?;
    let api = Api::new(&settings.url, settings.api_key)?;
    let mode = cli.global.output;
    match cli.command {
        Command::Upload(args) => upload_command(&api, args, mode).await,
        Command::Status { job } => {
            let job = api.job(&job, None).await?;
            print(mode, &job, || report::job_text(&job));
            Ok(exit::OK)
        }
        Command::Watch { job } => {
            let mut current = api.job(&job, None).await?;
            if mode == OutputMode::Text {
                eprintln!("{} {}", current.job_id, current.status);
            }
            if !current.is_finished() {
                current = tokio::select! {
                    job = api.wait_finished(&job) => job?,
                    _ = tokio::signal::ctrl_c() => return Ok(exit::INTERRUPTED),
                };
            }
            print(mode, &current, || report::job_text(&current));
            Ok(if current.status == "SUCCESS" {
                exit::OK
            } else {
                exit::SOME_FAILED
            })
        }
        Command::List { status, limit } => {
            let jobs = api.list(status.map(|s| s.as_api()), limit).await?;
            print(mode, &jobs, || report::jobs_text(&jobs));
            Ok(exit::OK)
        }
        Command::Get { job, output_file } => {
            let bytes = api.download(&job, &output_file).await?;
            let written = serde_json::json!({ "job_id": job, "file": output_file, "bytes": bytes });
            print(mode, &written, || {
                format!("{} bytes written to {}\n", bytes, output_file.display())
            });
            Ok(exit::OK)
        }
        Command::Keys(command) => keys_command(&api, command, mode).await,
    }
}

fn print<T: Serialize>(mode: OutputMode, value: &T, text: impl FnOnce() -> String) {
    match mode {
        OutputMode::Json => println!("{}", serde_json::to_string_pretty(value).expect("serialisable")),
        OutputMode::Text => print!("{}", text()),
    }
}

async fn upload_command(api: &Api, args: UploadArgs, mode: OutputMode) -> Result<u8, ClientError> {
    let files = upload::collect_files(&args.paths)?;
    if files.is_empty() {
        return Err(ClientError::Usage("no files to upload in the paths given".into()));
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| ClientError::Io(format!("{}: {e}", out.display())))?;
    }
    let total_bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let plan = UploadPlan {
        options: RenderOptions {
            width: args.width,
            height: args.height,
            fit: args.fit,
            format: args.format,
            quality: args.quality,
        },
        out: args.out,
        concurrency: usize::from(args.concurrency),
        files,
    };
    let progress = Progress::new(
        total_bytes,
        plan.files.len(),
        std::io::stderr().is_terminal(),
        mode == OutputMode::Text,
    );
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let outcomes = upload::run(api, &plan, &progress, &cancel).await;
    interrupt.abort();
    progress.finish();
    let interrupted = cancel.is_cancelled();
    let totals = report::totals(&outcomes, interrupted);
    let report = report::UploadReport {
        totals: &totals,
        results: &outcomes,
    };
    print(mode, &report, || report::upload_text(&outcomes, &totals));
    Ok(if interrupted {
        exit::INTERRUPTED
    } else if totals.failed == 0 {
        exit::OK
    } else {
        exit::SOME_FAILED
    })
}

async fn keys_command(api: &Api, command: KeysCommand, mode: OutputMode) -> Result<u8, ClientError> {
    match command {
        KeysCommand::Create {
            owner,
            scopes,
            name,
            expires_in,
        } => {
            let created = api
                .create_key(&owner, &scopes, name.as_deref(), expires_in)
                .await?;
            print(mode, &created, || {
                format!(
                    "{}\n(key {} for {}; this secret is shown once)\n",
                    created.key, created.info.id, created.info.owner
                )
            });
        }
        KeysCommand::List => {
            let keys = api.list_keys().await?;
            print(mode, &keys, || report::keys_text(&keys));
        }
        KeysCommand::Revoke { id } => {
            let key = api.revoke_key(&id).await?;
            print(mode, &key, || format!("{} {}\n", key.id, key.state));
        }
    }
    Ok(exit::OK)
}
