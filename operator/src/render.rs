//! Rendering a [`RenderPlan`]: shared by the inline executor (on the operator's bounded pool) and
//! by `thumbnail-operator render`, the command render Jobs run.
use crate::config::{LimitArgs, S3Args};
use crate::plan::{EXIT_BAD_INPUT, PlannedOutput, REASON_SOURCE_NOT_FOUND, RenderPlan, RenderResult};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use thumbnail_core::model::JobError;
use thumbnail_core::objects::{ObjectStore, Prefix, S3ObjectStore};
use thumbnail_core::placeholder::Placeholders;
use thumbnail_core::worker::{CpuPool, job_error, placeholders_of};
use thumbnail_core::{CoreError, engine};
use thumbnail_crds::OutputStatus;
use thumbnail_engine::Limits;
use tracing::{info, warn};

/// Why a render did not produce its outputs.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input can never be rendered (bad image, missing source): fail at once.
    #[error("{}: {}", .0.reason, .0.message)]
    BadInput(JobError),
    /// A dependency failed (object store down): worth another attempt.
    #[error(transparent)]
    Dependency(#[from] CoreError),
}

impl RenderError {
    fn from_core(err: CoreError, source_key: &str) -> Self {
        match err {
            CoreError::Engine(e) if e.is_bad_input() => RenderError::BadInput(job_error(&e)),
            CoreError::ObjectNotFound(_) => RenderError::BadInput(JobError {
                reason: REASON_SOURCE_NOT_FOUND.into(),
                message: format!("the original image {source_key} does not exist in the object store"),
            }),
            other => RenderError::Dependency(other),
        }
    }
}

/// Render one output on the pool (never on the async workers), with its placeholders when
/// asked (the first output's: see `thumbnail_core::placeholder`).
async fn render_one(
    cpu: &CpuPool,
    source: Bytes,
    output: &PlannedOutput,
    limits: Limits,
    with_placeholders: bool,
) -> Result<(engine::Thumbnail, Option<Placeholders>), CoreError> {
    let options = output.options;
    let rendered = cpu
        .run(move || {
            thumbnail_engine::render(&source, &options, &limits).map(|thumbnail| {
                let placeholders = with_placeholders.then(|| placeholders_of(&thumbnail)).flatten();
                (thumbnail, placeholders)
            })
        })
        .await?;
    Ok(rendered?)
}

/// Render every output of `plan` from `source` and write them to `objects`.
pub async fn render_outputs(
    plan: &RenderPlan,
    source: Bytes,
    objects: &dyn ObjectStore,
    limits: Limits,
    cpu: &CpuPool,
) -> Result<Vec<OutputStatus>, RenderError> {
    let mut written = Vec::with_capacity(plan.outputs.len());
    for (index, output) in plan.outputs.iter().enumerate() {
        let (thumbnail, placeholders) = render_one(cpu, source.clone(), output, limits, index == 0)
            .await
            .map_err(|e| RenderError::from_core(e, &plan.source_key))?;
        let sha256 = hex::encode(Sha256::digest(&thumbnail.bytes));
        let bytes = thumbnail.bytes.len() as u64;
        let content_type = thumbnail.format.content_type();
        objects
            .put_bytes(&output.key, Bytes::from(thumbnail.bytes), content_type)
            .await?;
        written.push(OutputStatus {
            name: output.name.clone(),
            bucket: objects.bucket().to_owned(),
            key: output.key.clone(),
            width: thumbnail.width,
            height: thumbnail.height,
            bytes,
            content_type: content_type.to_owned(),
            sha256,
            thumbhash: placeholders.as_ref().map(|p| p.thumbhash.clone()),
            blurhash: placeholders.map(|p| p.blurhash),
        });
    }
    Ok(written)
}

/// Bytes of a source read to probe its header: enough for every format's header but for JPEGs
/// with huge metadata before the frame header (those are read whole, see [`read_source`]).
pub const PROBE_BYTES: u64 = 256 * 1024;

/// The bad input of a source larger than the limit.
fn too_large(size: u64, limits: &Limits) -> RenderError {
    RenderError::BadInput(job_error(&thumbnail_engine::EngineError::FileTooLarge {
        size,
        max: limits.max_input_bytes,
    }))
}

/// Read the start of a source image, for its header: memory is bounded whatever the object is.
/// A missing object or one over the size limit is bad input.
pub async fn read_head(objects: &dyn ObjectStore, key: &str, limits: &Limits) -> Result<Prefix, RenderError> {
    let head = objects
        .get_prefix(key, PROBE_BYTES.min(limits.max_input_bytes))
        .await
        .map_err(|e| RenderError::from_core(e, key))?;
    if head.total_size > limits.max_input_bytes {
        return Err(too_large(head.total_size, limits));
    }
    Ok(head)
}

/// Read a whole source image, never more than the size limit (one byte more tells that it is
/// over). A missing object or one over the limit is bad input.
pub async fn read_source(
    objects: &dyn ObjectStore,
    key: &str,
    limits: &Limits,
) -> Result<Bytes, RenderError> {
    let read = objects
        .get_prefix(key, limits.max_input_bytes.saturating_add(1))
        .await
        .map_err(|e| RenderError::from_core(e, key))?;
    if read.total_size > limits.max_input_bytes || read.bytes.len() as u64 > limits.max_input_bytes {
        return Err(too_large(read.total_size.max(read.bytes.len() as u64), limits));
    }
    Ok(read.bytes)
}

/// Probe a source's header from its first bytes, reading the whole source only when the header
/// does not fit in them (huge EXIF or ICC segments before a JPEG's frame header).
pub async fn probe_source(
    objects: &dyn ObjectStore,
    key: &str,
    head: &Prefix,
    limits: &Limits,
) -> Result<thumbnail_engine::ProbeInfo, RenderError> {
    // The size was checked against the limit when the head was read; the probe sees a prefix.
    let probe_limits = Limits {
        max_input_bytes: u64::MAX,
        ..*limits
    };
    let bad = |e: thumbnail_engine::EngineError| RenderError::BadInput(job_error(&e));
    match thumbnail_engine::probe(&head.bytes, &probe_limits) {
        Err(thumbnail_engine::EngineError::Corrupt { .. }) if !head.is_whole() => {
            let whole = read_source(objects, key, limits).await?;
            thumbnail_engine::probe(&whole, &probe_limits).map_err(bad)
        }
        other => other.map_err(bad),
    }
}

async fn write_result(
    objects: &dyn ObjectStore,
    plan: &RenderPlan,
    result: &RenderResult,
) -> Result<(), CoreError> {
    let json = serde_json::to_vec(result).map_err(|e| CoreError::Internal(e.to_string()))?;
    objects
        .put_bytes(&plan.result_key, Bytes::from(json), "application/json")
        .await
}

/// `thumbnail-operator render --plan JSON`: what a render Job's pod runs. Exit code 0 when every
/// output was written, [`EXIT_BAD_INPUT`] when the input can never be rendered (the Job's
/// podFailurePolicy then fails it at once), 1 for errors worth a retry. Either of the first two
/// leaves a [`RenderResult`] at `plan.result_key` for the operator.
pub async fn render_command(plan: &RenderPlan, s3: &S3Args, limits: &LimitArgs) -> i32 {
    let limits = limits.limits();
    if s3.s3_bucket_name.is_empty() {
        eprintln!("error: S3_BUCKET_NAME is required");
        return 1;
    }
    let outputs = match S3ObjectStore::new(&s3.s3_config(None)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: object store: {e}");
            return 1;
        }
    };
    let source_store = match plan.source_bucket.as_deref().filter(|b| *b != s3.s3_bucket_name) {
        Some(bucket) => match S3ObjectStore::new(&s3.s3_config(Some(bucket))).await {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: object store: {e}");
                return 1;
            }
        },
        None => None,
    };
    let source_store: &dyn ObjectStore = source_store.as_ref().unwrap_or(&outputs);
    let result = match read_source(source_store, &plan.source_key, &limits).await {
        Ok(source) => render_outputs(plan, source, &outputs, limits, &CpuPool::new(1)).await,
        Err(e) => Err(e),
    };
    let (result, code) = match result {
        Ok(written) => {
            info!(job_id = %plan.job_id, outputs = written.len(), "rendered");
            (
                RenderResult {
                    job_id: plan.job_id,
                    outputs: written,
                    error: None,
                },
                0,
            )
        }
        Err(RenderError::BadInput(error)) => {
            eprintln!("error: {} ({})", error.message, error.reason);
            (
                RenderResult {
                    job_id: plan.job_id,
                    outputs: Vec::new(),
                    error: Some(error),
                },
                EXIT_BAD_INPUT,
            )
        }
        Err(RenderError::Dependency(e)) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Err(e) = write_result(&outputs, plan, &result).await {
        warn!(error = %e, "could not write the render result");
        eprintln!("error: writing the result: {e}");
        return 1;
    }
    code
}
