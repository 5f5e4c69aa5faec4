//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! runs the controller.
//!
//! The holder renews the Lease every `renew_every`; every write is an update guarded by the
//! Lease's resourceVersion, so of two replicas racing for it one gets a 409 and stays standby.
//! A standby takes over when the holder released the Lease, or when the Lease has not changed
//! for `duration` as measured on the standby's own clock (like client-go: no trust in the
//! holder's clock). A leader that cannot renew for `renew_deadline` (two thirds of the duration,
//! so before anyone else may take over) gives up leadership and stops.
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long the Lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

impl LeaseSettings {
    /// How long the holder keeps leading without a successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.duration.mul_f64(2.0 / 3.0)
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last Lease version seen and when it was first seen (local clock).
    observed: Mutex<Option<(String, Instant)>>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict() || s.is_already_exists())
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    fn spec(&self, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let mine =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.settings.identity.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.duration.as_secs_f64().ceil().max(1.0) as i32),
            acquire_time: if mine {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if mine || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One round: take, keep or leave the Lease. `Ok(true)` when this replica holds it now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let name = &self.settings.name;
        let Some(lease) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.settings.identity;
        let valid_for = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.settings.duration);
        let expired = self.unchanged_for(&lease) >= valid_for;
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let mut next = lease.clone();
        next.spec = Some(self.spec(now, Some(&spec)));
        match self.api.replace(name, &PostParams::default(), &next).await {
            Ok(updated) => {
                if !mine {
                    info!(identity = %self.settings.identity, previous = %holder, "acquired the lease");
                }
                self.observe(&updated);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        *self.observed.lock().expect("lease observation lock") = Some((rv, Instant::now()));
    }

    /// How long this Lease version has been seen unchanged.
    fn unchanged_for(&self, lease: &Lease) -> Duration {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let mut observed = self.observed.lock().expect("lease observation lock");
        match &*observed {
            Some((seen, at)) if *seen == rv => at.elapsed(),
            _ => {
                *observed = Some((rv, Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// Wait until this replica holds the Lease. `false` when cancelled first.
    pub async fn acquire(&self, cancel: &CancellationToken) -> bool {
        loop {
            // Bounded: kube's client sets no read timeout, and a hung request must not keep a
            // standby from trying again (or from stopping).
            let round = tokio::time::timeout(self.settings.duration, self.try_acquire_or_renew());
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return false,
                outcome = round => outcome,
            };
            match outcome {
                Ok(Ok(true)) => return true,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => warn!(error = %e, "leader election: cannot read or write the lease"),
                Err(_) => warn!("leader election: no answer from the API server within the lease duration"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.settings.renew_every) => {}
            }
        }
    }

    /// Keep renewing until `cancel` fires (returns `false`) or leadership is lost (`true`): another
    /// replica holds the Lease, or no renewal succeeded for the renew deadline. Every renewal is
    /// bounded by what is left of the renew deadline, so a hung request (kube's client sets no
    /// read timeout) ends leadership in time: before a standby may take the Lease over.
    pub async fn hold(&self, cancel: &CancellationToken) -> bool {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.settings.renew_every) => {}
            }
            let left = self.settings.renew_deadline().saturating_sub(renewed.elapsed());
            let round = tokio::time::timeout(left, self.try_acquire_or_renew());
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return false,
                outcome = round => outcome,
            };
            match outcome {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    warn!(identity = %self.settings.identity, "leader election: the lease is held by another replica");
                    return true;
                }
                Ok(Err(e)) => warn!(error = %e, "leader election: renewing the lease failed"),
                Err(_) => warn!("leader election: a renewal did not answer within the renew deadline"),
            }
            if renewed.elapsed() >= self.settings.renew_deadline() {
                warn!(identity = %self.settings.identity, "leader election: no renewal within the renew deadline; stepping down");
                return true;
            }
        }
    }

    /// The current holder of the Lease, when it holds it (renewed within its duration by the
    /// API server's timestamps, read against this replica's clock).
    pub async fn active_holder(&self) -> Result<Option<String>, kube::Error> {
        active_holder(&self.api, &self.settings.name).await
    }

    /// Give the Lease up (on shutdown), so that a standby takes over at once.
    pub async fn release(&self) {
        let name = &self.settings.name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => info!(identity = %self.settings.identity, "released the lease"),
            Err(e) => warn!(error = %e, "could not release the lease"),
        }
    }
}

/// The holder of Lease `name`, when it holds it (renewed within its duration).
pub async fn active_holder(api: &Api<Lease>, name: &str) -> Result<Option<String>, kube::Error> {
    let Some(lease) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let Some(spec) = lease.spec else {
        return Ok(None);
    };
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let valid = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
    let fresh = spec.renew_time.is_some_and(|t| {
        let age = Timestamp::now().duration_since(t.0);
        Duration::try_from(age).is_ok_and(|age| age < valid)
            // Renewed "in the future": clocks differ; take the holder at its word.
            || age.is_negative()
    });
    Ok(holder.filter(|_| fresh))
}
