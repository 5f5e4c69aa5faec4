//! `thumbnail upload`: every file through upload → wait → download, a bounded number at once,
//! one overall progress bar, and an outcome per file (a bad file never stops the others).
use crate::ClientError;
use crate::api::{Api, Job, RenderOptions};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

/// Where one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileState {
    /// The job succeeded (and, with --out, its thumbnail was downloaded).
    Success,
    /// The job ran and failed (a corrupt image, too many pixels, …).
    Failure,
    /// The service refused the upload (see `detail`).
    Rejected,
    /// The client could not finish this file (the service unreachable, a download failed).
    Error,
    /// Uploaded, but interrupted (Ctrl-C) before the job finished: it goes on in the service.
    Submitted,
    /// Interrupted before the upload.
    NotSubmitted,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Success => "SUCCESS",
            FileState::Failure => "FAILURE",
            FileState::Rejected => "REJECTED",
            FileState::Error => "ERROR",
            FileState::Submitted => "SUBMITTED",
            FileState::NotSubmitted => "NOT_SUBMITTED",
        }
    }
}

/// One file's outcome, as the summary and the JSON report give it.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub file: PathBuf,
    pub state: FileState,
    pub job_id: Option<String>,
    /// The job's failure reason (e.g. `CorruptImage`), when it failed.
    pub reason: Option<String>,
    /// Why: the job's failure message or the server's `detail`.
    pub detail: Option<String>,
    /// Where the thumbnail was written.
    pub thumbnail: Option<PathBuf>,
    pub thumbhash: Option<String>,
}

impl FileOutcome {
    fn new(file: &Path, state: FileState) -> Self {
        FileOutcome {
            file: file.to_owned(),
            state,
            job_id: None,
            reason: None,
            detail: None,
            thumbnail: None,
            thumbhash: None,
        }
    }
}

/// The files named: files as given, folders searched recursively (hidden entries skipped),
/// sorted within each folder. A path that does not exist is an error before anything is sent.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ClientError> {
    let mut files = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ClientError> {
    let read = |e: std::io::Error| ClientError::Usage(format!("{}: {e}", dir.display()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, like the files named on the command line.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, files)?,
            Ok(meta) if meta.is_file() => files.push(path),
            _ => {}
        }
    }
    Ok(())
}

/// A distinct name (without extension) for each file's thumbnail: its stem, then `-2`, `-3`, …
/// for repeats. Pure.
pub fn thumbnail_stems(files: &[PathBuf]) -> Vec<String> {
    let mut taken = HashSet::new();
    files
        .iter()
        .map(|file| {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "thumbnail".to_owned());
            let mut candidate = stem.clone();
            let mut n = 1;
            while !taken.insert(candidate.to_lowercase()) {
                n += 1;
                candidate = format!("{stem}-{n}");
            }
            candidate
        })
        .collect()
}

/// The extension of a thumbnail's content type.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        _ => "jpg",
    }
}

/// What the user sees while files go: one overall bar (bytes sent, rate, ETA; files finished)
/// on a terminal, a line per finished file otherwise (text mode), nothing in JSON mode.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    lines: bool,
}

impl Progress {
    pub fn new(total_bytes: u64, files: usize, terminal: bool, text: bool) -> Self {
        let bar = if terminal && text {
            ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta} | {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("0/{files} files done"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Progress {
            bar,
            lines: text && !terminal,
        }
    }

    fn sent(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn event(&self, line: String) {
        if self.lines {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn done(&self, finished: usize, files: usize, failed: usize) {
        self.bar
            .set_message(format!("{finished}/{files} files done, {failed} not successful"));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// What `upload` was asked to do.
pub struct UploadPlan {
    pub files: Vec<PathBuf>,
    pub options: RenderOptions,
    pub out: Option<PathBuf>,
    pub concurrency: usize,
}

/// Run the plan: at most `concurrency` files in flight; after `cancel`, nothing new starts, jobs
/// in flight are reported as submitted, and the rest as not submitted.
pub async fn run(
    api: &Api,
    plan: &UploadPlan,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Vec<FileOutcome> {
    let stems = thumbnail_stems(&plan.files);
    let total = plan.files.len();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, FileOutcome)> =
        futures::stream::iter(plan.files.iter().zip(stems).enumerate())
            .map(|(index, (file, stem))| {
                let (finished, failed) = (&finished, &failed);
                async move {
                    let outcome = one_file(api, plan, file, &stem, progress, cancel).await;
                    let done = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if outcome.state != FileState::Success {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    progress.done(done, total, failed.load(std::sync::atomic::Ordering::Relaxed));
                    progress.event(event_line(&outcome));
                    (index, outcome)
                }
            })
            .buffer_unordered(plan.concurrency.max(1))
            .collect()
            .await;
    outcomes.sort_by_key(|(index, _)| *index);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

fn event_line(outcome: &FileOutcome) -> String {
    let mut line = format!("{:<13} {}", outcome.state.as_str(), outcome.file.display());
    if let Some(detail) = &outcome.detail {
        line.push_str(&format!(": {detail}"));
    }
    line
}

async fn one_file(
    api: &Api,
    plan: &UploadPlan,
    file: &Path,
    stem: &str,
    progress: &Progress,
    cancel: &CancellationToken,
) -> FileOutcome {
    if cancel.is_cancelled() {
        return FileOutcome::new(file, FileState::NotSubmitted);
    }
    let accepted = tokio::select! {
        biased;
        _ = cancel.cancelled() => return FileOutcome::new(file, FileState::NotSubmitted),
        accepted = send(api, file, &plan.options, progress) => accepted,
    };
    let job_id = match accepted {
        Ok(id) => id,
        Err(err) => {
            let state = match err {
                ClientError::Refused { .. } => FileState::Rejected,
                _ => FileState::Error,
            };
            let mut outcome = FileOutcome::new(file, state);
            outcome.detail = Some(match err {
                ClientError::Refused { detail, .. } => detail,
                other => other.to_string(),
            });
            return outcome;
        }
    };
    let mut outcome = FileOutcome::new(file, FileState::Submitted);
    outcome.job_id = Some(job_id.clone());
    let job = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            outcome.detail = Some(format!("interrupted before the job finished; `thumbnail watch {job_id}`"));
            return outcome;
        }
        job = api.wait_finished(&job_id) => job,
    };
    match job {
        Ok(job) => finished(api, plan, stem, job, outcome, cancel).await,
        Err(err) => {
            outcome.state = FileState::Error;
            outcome.detail = Some(err.to_string());
            outcome
        }
    }
}

/// Upload one file, streaming it from disk and counting its bytes as they go.
async fn send(
    api: &Api,
    file: &Path,
    options: &RenderOptions,
    progress: &Progress,
) -> Result<String, ClientError> {
    let io = |e: std::io::Error| ClientError::Io(format!("{}: {e}", file.display()));
    let handle = tokio::fs::File::open(file).await.map_err(io)?;
    let length = handle.metadata().await.map_err(io)?.len();
    let counter = progress.clone();
    let body = ReaderStream::new(handle).inspect_ok(move |chunk| counter.sent(chunk.len() as u64));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_owned());
    Ok(api.upload(&name, length, body, options).await?.job_id)
}

async fn finished(
    api: &Api,
    plan: &UploadPlan,
    stem: &str,
    job: Job,
    mut outcome: FileOutcome,
    cancel: &CancellationToken,
) -> FileOutcome {
    if job.status != "SUCCESS" {
        outcome.state = FileState::Failure;
        outcome.reason = job.error.as_ref().map(|e| e.reason.clone());
        outcome.detail = job.error.map(|e| e.message);
        return outcome;
    }
    outcome.thumbhash = job.placeholder.map(|p| p.thumbhash);
    let Some(out) = &plan.out else {
        outcome.state = FileState::Success;
        return outcome;
    };
    let ext = job.outputs.first().map_or("jpg", |o| extension(&o.content_type));
    let path = out.join(format!("{stem}.{ext}"));
    let downloaded = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(ClientError::Io("interrupted before the download finished".into())),
        result = api.download(&job.job_id, &path) => result,
    };
    match downloaded {
        Ok(_) => {
            outcome.state = FileState::Success;
            outcome.thumbnail = Some(path);
        }
        Err(err) => {
            outcome.state = FileState::Error;
            outcome.detail = Some(format!("the job succeeded but the download failed: {err}"));
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_distinct_whatever_the_case() {
        let files: Vec<PathBuf> = ["a/cat.jpg", "b/cat.png", "c/Cat.webp", "dog.jpg", ".jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(thumbnail_stems(&files), ["cat", "cat-2", "Cat-3", "dog", ".jpg"]);
    }

    #[test]
    fn folders_are_walked_sorted_without_hidden_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        for name in ["b.jpg", "a.png", "sub/c.jpg", ".hidden.jpg", ".git/x.jpg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let files = collect_files(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.png", "b.jpg", "sub/c.jpg"]);
        let err = collect_files(&[dir.path().join("nope")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
