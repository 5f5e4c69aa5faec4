//! Pure helpers that move a [`ThumbnailJobStatus`] through its lifecycle, keeping `phase`, the
//! conditions and the timestamps consistent. No I/O: the operator computes the new status with
//! these and patches it; `now` is always passed in so that tests are deterministic.
//!
//! | phase     | `Running`       | `Succeeded`      | `Failed`        |
//! |-----------|-----------------|------------------|-----------------|
//! | Pending   | False `Pending` | Unknown `Pending`| False `Pending` |
//! | Running   | True            | Unknown          | False           |
//! | Succeeded | False           | True             | False           |
//! | Failed    | False           | False            | True            |
//!
//! A condition's `lastTransitionTime` changes only when its `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::types::{Executor, OutputStatus, Phase, ThumbnailJobStatus};

/// Condition type: an attempt is under way.
pub const CONDITION_RUNNING: &str = "Running";
/// Condition type: every output was written (`kubectl wait --for=condition=Succeeded`).
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// Condition type: the job failed for good.
pub const CONDITION_FAILED: &str = "Failed";

/// Reason: accepted, waiting for the operator to start it.
pub const REASON_PENDING: &str = "Pending";
/// Reason: waiting before the next attempt after a failed one.
pub const REASON_BACKOFF: &str = "BackoffLimitNotReached";
/// Reason: rendering in the operator's worker pool.
pub const REASON_RENDERING_INLINE: &str = "RenderingInline";
/// Reason: rendering in a batch/v1 Job.
pub const REASON_RENDERING_IN_JOB: &str = "RenderingInJob";
/// Reason: all outputs were written.
pub const REASON_COMPLETED: &str = "Completed";
/// Reason: the job failed (see the `Failed` condition for the specific reason).
pub const REASON_FAILED: &str = "Failed";
/// Failure reason: every attempt allowed by `backoffLimit` failed.
pub const REASON_BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
/// Failure reason: `activeDeadlineSeconds` passed.
pub const REASON_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Reason of `Pending` after a replica handed an unfinished attempt back (see
/// [`ThumbnailJobStatus::hand_back`]).
pub const REASON_HANDED_BACK: &str = "HandedBack";

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Formats a duration the way `kubectl` users read it: `850ms`, `4.2s`, `42s`, `3m4s`, `2h5m`.
pub fn format_duration(millis: i64) -> String {
    let millis = millis.max(0);
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    if millis < 10_000 {
        return format!("{}.{}s", millis / 1_000, (millis % 1_000) / 100);
    }
    let secs = millis / 1_000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3_600, (secs % 3_600) / 60),
    }
}

impl ThumbnailJobStatus {
    /// The status of a job just seen by the operator: phase `Pending`, all conditions set.
    pub fn pending(observed_generation: Option<i64>, now: Timestamp) -> Self {
        let mut status = ThumbnailJobStatus::default();
        status.set_pending(
            REASON_PENDING,
            "Waiting for the operator to start the job",
            observed_generation,
            now,
        );
        status
    }

    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition `type_` is present with status `True`.
    pub fn is_condition_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// The phase, `Pending` when unset.
    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or_default()
    }

    /// Whether the job has succeeded or failed for good.
    pub fn is_finished(&self) -> bool {
        self.phase().is_finished()
    }

    /// Sets (adds or updates) one condition. `lastTransitionTime` is set to `now` only when the
    /// condition is new or its status changes; reason, message and observedGeneration are always
    /// updated. Returns whether anything changed.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        observed_generation: Option<i64>,
        now: Timestamp,
    ) -> bool {
        let status = status.as_str();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                let changed = c.status != status
                    || c.reason != reason
                    || c.message != message
                    || c.observed_generation != observed_generation;
                if c.status != status {
                    c.status = status.to_owned();
                    c.last_transition_time = Time(now);
                }
                c.reason = reason.to_owned();
                c.message = message.to_owned();
                c.observed_generation = observed_generation;
                changed
            }
            None => {
                self.conditions.push(Condition {
                    type_: type_.to_owned(),
                    status: status.to_owned(),
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                    observed_generation,
                    last_transition_time: Time(now),
                });
                true
            }
        }
    }

    /// Phase `Pending`: not started yet, or waiting before a retry (`reason`
    /// [`REASON_BACKOFF`] with the last attempt's error as `message`).
    pub fn set_pending(&mut self, reason: &str, message: &str, generation: Option<i64>, now: Timestamp) {
        self.phase = Some(Phase::Pending);
        self.observed_generation = generation;
        self.set_condition(
            CONDITION_RUNNING,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::Unknown,
            reason,
            message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_FAILED,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        );
    }

    /// Phase `Running`: a new attempt starts on `executor` (`kubernetes_job` names the batch Job
    /// when there is one). Counts the attempt and sets `startTime` on the first one.
    pub fn start_attempt(
        &mut self,
        executor: Executor,
        kubernetes_job: Option<String>,
        claimed_by: &str,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        self.phase = Some(Phase::Running);
        self.claimed_by = Some(claimed_by.to_owned());
        self.observed_generation = generation;
        self.attempts = Some(self.attempts.unwrap_or(0) + 1);
        if self.start_time.is_none() {
            self.start_time = Some(Time(now));
        }
        self.executor = Some(executor);
        self.kubernetes_job = kubernetes_job;
        let (reason, message) = match (executor, &self.kubernetes_job) {
            (Executor::Inline, _) => (REASON_RENDERING_INLINE, "Rendering in the operator".to_owned()),
            (Executor::Job, Some(job)) => (REASON_RENDERING_IN_JOB, format!("Rendering in Job {job}")),
            (Executor::Job, None) => (REASON_RENDERING_IN_JOB, "Rendering in a Job".to_owned()),
        };
        let message = format!("{message} (attempt {})", self.attempts.unwrap_or(1));
        self.set_condition(
            CONDITION_RUNNING,
            ConditionStatus::True,
            reason,
            &message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::Unknown,
            reason,
            &message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_FAILED,
            ConditionStatus::False,
            reason,
            &message,
            generation,
            now,
        );
    }

    /// Back to `Pending` without counting the attempt: the replica that claimed it stopped it
    /// before it finished (it lost the leader Lease, or its shutdown grace ran out) and hands it
    /// over, so that the next leader starts it again as the same attempt, the way the Job
    /// controller does not count disrupted pods against `backoffLimit`.
    pub fn hand_back(&mut self, message: &str, generation: Option<i64>, now: Timestamp) {
        self.attempts = Some((self.attempts.unwrap_or(1) - 1).max(0));
        if self.attempts == Some(0) {
            self.start_time = None;
        }
        self.claimed_by = None;
        self.executor = None;
        self.kubernetes_job = None;
        self.set_pending(REASON_HANDED_BACK, message, generation, now);
    }

    /// Phase `Succeeded` with the objects written. Clears any failure left by earlier attempts.
    pub fn succeed(&mut self, outputs: Vec<OutputStatus>, generation: Option<i64>, now: Timestamp) {
        self.phase = Some(Phase::Succeeded);
        self.observed_generation = generation;
        let message = match outputs.len() {
            1 => "1 thumbnail written".to_owned(),
            n => format!("{n} thumbnails written"),
        };
        self.outputs = outputs;
        self.failure_reason = None;
        self.failure_message = None;
        self.finish(now);
        self.set_condition(
            CONDITION_RUNNING,
            ConditionStatus::False,
            REASON_COMPLETED,
            &message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::True,
            REASON_COMPLETED,
            &message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_FAILED,
            ConditionStatus::False,
            REASON_COMPLETED,
            &message,
            generation,
            now,
        );
    }

    /// Phase `Failed` for good, with a CamelCase `reason` (e.g. `UnsupportedFormat`,
    /// [`REASON_BACKOFF_LIMIT_EXCEEDED`]) and a human-readable message.
    pub fn fail(&mut self, reason: &str, message: &str, generation: Option<i64>, now: Timestamp) {
        self.phase = Some(Phase::Failed);
        self.observed_generation = generation;
        self.failure_reason = Some(reason.to_owned());
        self.failure_message = Some(message.to_owned());
        self.finish(now);
        self.set_condition(
            CONDITION_RUNNING,
            ConditionStatus::False,
            REASON_FAILED,
            message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        );
        self.set_condition(
            CONDITION_FAILED,
            ConditionStatus::True,
            reason,
            message,
            generation,
            now,
        );
    }

    fn finish(&mut self, now: Timestamp) {
        let start = self.start_time.get_or_insert(Time(now)).0;
        self.completion_time = Some(Time(now));
        let millis = now.as_millisecond() - start.as_millisecond();
        self.duration = Some(format_duration(millis));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ThumbnailJob, ThumbnailJobSpec};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn output(name: &str) -> OutputStatus {
        OutputStatus {
            name: name.into(),
            bucket: "thumbnails".into(),
            key: format!("images/thumbnails/{name}.jpg"),
            width: 100,
            height: 100,
            bytes: 1234,
            content_type: "image/jpeg".into(),
            sha256: "00".repeat(32),
            thumbhash: None,
            blurhash: None,
        }
    }

    fn summary(s: &ThumbnailJobStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    #[test]
    fn pending_sets_every_condition() {
        let s = ThumbnailJobStatus::pending(Some(1), t(0));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(
            summary(&s),
            [
                ("Running".into(), "False".into(), "Pending".into()),
                ("Succeeded".into(), "Unknown".into(), "Pending".into()),
                ("Failed".into(), "False".into(), "Pending".into()),
            ]
        );
        assert!(s.conditions.iter().all(|c| c.last_transition_time == Time(t(0))));
        assert!(!s.is_finished());
    }

    #[test]
    fn last_transition_time_kept_while_status_unchanged() {
        let mut s = ThumbnailJobStatus::pending(Some(1), t(0));
        let changed = s.set_condition(
            CONDITION_FAILED,
            ConditionStatus::False,
            REASON_PENDING,
            "Waiting for the operator to start the job",
            Some(1),
            t(5),
        );
        assert!(!changed, "identical condition is no change");
        assert_eq!(
            s.condition(CONDITION_FAILED).unwrap().last_transition_time,
            Time(t(0))
        );

        let changed = s.set_condition(
            CONDITION_FAILED,
            ConditionStatus::False,
            "Other",
            "m",
            Some(2),
            t(6),
        );
        assert!(changed);
        let c = s.condition(CONDITION_FAILED).unwrap();
        assert_eq!((c.reason.as_str(), c.observed_generation), ("Other", Some(2)));
        assert_eq!(c.last_transition_time, Time(t(0)), "status unchanged: time kept");

        s.set_condition(
            CONDITION_FAILED,
            ConditionStatus::True,
            "Boom",
            "m",
            Some(2),
            t(7),
        );
        assert_eq!(
            s.condition(CONDITION_FAILED).unwrap().last_transition_time,
            Time(t(7))
        );
        assert!(s.is_condition_true(CONDITION_FAILED));
    }

    #[test]
    fn run_then_succeed() {
        let mut s = ThumbnailJobStatus::pending(Some(1), t(0));
        s.start_attempt(Executor::Inline, None, "op-a", Some(1), t(2));
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.attempts, Some(1));
        assert_eq!(s.start_time, Some(Time(t(2))));
        assert!(s.is_condition_true(CONDITION_RUNNING));
        assert_eq!(
            s.condition(CONDITION_RUNNING).unwrap().last_transition_time,
            Time(t(2))
        );
        assert_eq!(
            s.condition(CONDITION_SUCCEEDED).unwrap().last_transition_time,
            Time(t(0))
        );

        s.succeed(vec![output("default")], Some(1), t(14));
        assert_eq!(s.phase, Some(Phase::Succeeded));
        assert!(s.is_finished());
        assert!(s.is_condition_true(CONDITION_SUCCEEDED));
        assert!(!s.is_condition_true(CONDITION_RUNNING));
        assert!(!s.is_condition_true(CONDITION_FAILED));
        assert_eq!(s.completion_time, Some(Time(t(14))));
        assert_eq!(s.duration.as_deref(), Some("12s"));
        assert_eq!(
            s.condition(CONDITION_SUCCEEDED).unwrap().message,
            "1 thumbnail written"
        );
        assert_eq!(
            s.condition(CONDITION_FAILED).unwrap().last_transition_time,
            Time(t(0))
        );
    }

    #[test]
    fn a_handed_back_attempt_does_not_count() {
        let mut s = ThumbnailJobStatus::pending(Some(1), t(0));
        s.start_attempt(Executor::Inline, None, "op-a", Some(1), t(2));
        assert_eq!(s.claimed_by.as_deref(), Some("op-a"));
        s.hand_back("op-a lost the lease", Some(1), t(3));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!((s.attempts, s.start_time.as_ref()), (Some(0), None));
        assert_eq!((s.claimed_by.as_ref(), s.executor), (None, None));
        assert_eq!(s.condition(CONDITION_RUNNING).unwrap().reason, REASON_HANDED_BACK);
        // A second attempt handed back keeps the first one's count and start time.
        s.start_attempt(Executor::Inline, None, "op-b", Some(1), t(4));
        s.start_attempt(Executor::Inline, None, "op-b", Some(1), t(5));
        s.hand_back("op-b stopped", Some(1), t(6));
        assert_eq!((s.attempts, s.start_time), (Some(1), Some(Time(t(4)))));
    }

    #[test]
    fn retry_then_fail_for_good() {
        let mut s = ThumbnailJobStatus::pending(Some(1), t(0));
        s.start_attempt(Executor::Job, Some("tj-abc-1".into()), "op-a", Some(1), t(1));
        assert_eq!(
            s.condition(CONDITION_RUNNING).unwrap().message,
            "Rendering in Job tj-abc-1 (attempt 1)"
        );
        s.set_pending(REASON_BACKOFF, "pod OOMKilled", Some(1), t(3));
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(
            s.condition(CONDITION_RUNNING).unwrap().last_transition_time,
            Time(t(3))
        );
        s.start_attempt(Executor::Job, Some("tj-abc-2".into()), "op-a", Some(1), t(5));
        assert_eq!(s.attempts, Some(2));
        assert_eq!(
            s.start_time,
            Some(Time(t(1))),
            "start time is the first attempt's"
        );
        assert_eq!(s.kubernetes_job.as_deref(), Some("tj-abc-2"));

        s.fail(
            REASON_BACKOFF_LIMIT_EXCEEDED,
            "2 attempts failed: pod OOMKilled",
            Some(1),
            t(70),
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        assert!(s.is_condition_true(CONDITION_FAILED));
        assert_eq!(s.condition(CONDITION_SUCCEEDED).unwrap().status, "False");
        assert_eq!(s.failure_reason.as_deref(), Some(REASON_BACKOFF_LIMIT_EXCEEDED));
        assert_eq!(s.duration.as_deref(), Some("1m9s"));
    }

    #[test]
    fn fail_without_start_has_zero_duration() {
        let mut s = ThumbnailJobStatus::pending(None, t(0));
        s.fail("InvalidSpec", "no such key", None, t(4));
        assert_eq!(s.start_time, Some(Time(t(4))));
        assert_eq!(s.duration.as_deref(), Some("0ms"));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(-5), "0ms");
        assert_eq!(format_duration(850), "850ms");
        assert_eq!(format_duration(4_250), "4.2s");
        assert_eq!(format_duration(42_000), "42s");
        assert_eq!(format_duration(184_000), "3m4s");
        assert_eq!(format_duration(7_500_000), "2h5m");
    }

    #[test]
    fn status_serializes_in_camel_case_and_round_trips() {
        let mut s = ThumbnailJobStatus::pending(Some(3), t(0));
        s.start_attempt(Executor::Job, Some("j".into()), "op-a", Some(3), t(1));
        s.succeed(vec![output("default")], Some(3), t(2));
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "phase",
            "conditions",
            "attempts",
            "startTime",
            "completionTime",
            "duration",
            "outputs",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["executor"], "job");
        assert_eq!(v["kubernetesJob"], "j");
        assert_eq!(v["observedGeneration"], 3);
        assert_eq!(v["outputs"][0]["contentType"], "image/jpeg");
        assert_eq!(v["conditions"][1]["lastTransitionTime"], "2023-11-14T22:13:22Z");
        assert!(v.get("failureReason").is_none());
        let back: ThumbnailJobStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn job_id_falls_back_to_uid() {
        let mut job = ThumbnailJob::new("a", ThumbnailJobSpec::for_key("k"));
        assert_eq!(job.job_id(), None);
        job.metadata.uid = Some("uid-1".into());
        assert_eq!(job.job_id(), Some("uid-1"));
        job.spec.job_id = Some("0190f3c2-7a1b-7c3d-8e4f-5a6b7c8d9e0f".into());
        assert_eq!(job.job_id(), Some("0190f3c2-7a1b-7c3d-8e4f-5a6b7c8d9e0f"));
        assert_eq!(job.phase(), Phase::Pending);
    }
}
