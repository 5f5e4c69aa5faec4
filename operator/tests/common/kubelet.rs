//! A kubelet stand-in: no kubelet (and no scheduler) runs on these machines, so the tests play
//! the node. The real Job controller creates the pods of render Jobs; this binds each to a node
//! (the `pods/binding` subresource, as the scheduler does), runs its container's command (the
//! project's own `thumbnail-operator render` binary, with the pod spec's arguments and
//! environment, `secretKeyRef` values read from the real Secrets) and writes the pod's status
//! (phase, container state, exit code) as a kubelet does, so the real Job controller decides how
//! each Job ends. A pod whose Secret (or key) is missing stays `Pending` with the kubelet's
//! `CreateContainerConfigError`; a pod being deleted has its process killed and is then removed.
//! What it does not do: enforce resource limits, pull images, or run anything but that binary.
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The node the stand-in pretends to be.
pub const NODE: &str = "kubelet-stand-in";

/// How the stand-in ran the pods of one Job.
#[derive(Debug, Clone, Default)]
pub struct JobRun {
    /// Exit codes of its pods, in order (137: killed).
    pub exit_codes: Vec<i32>,
    /// What the last pod wrote to stderr.
    pub stderr: String,
}

struct State {
    admin: kube::Client,
    namespace: String,
    binary: String,
    runs: Mutex<HashMap<String, JobRun>>,
    /// Pods being handled (by uid).
    handled: Mutex<HashSet<String>>,
    /// Running processes' kill switches, by pod uid.
    kills: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    paused: AtomicBool,
    /// Pods seen while paused, by uid: run when the pause ends.
    waiting: Mutex<HashMap<String, Pod>>,
}

pub struct Kubelet {
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Kubelet {
    /// Serve the pods of `namespace`, running `binary` for their `thumbnail-operator` command.
    pub fn start(admin: kube::Client, namespace: &str, binary: &str) -> Kubelet {
        let state = Arc::new(State {
            admin,
            namespace: namespace.to_owned(),
            binary: binary.to_owned(),
            runs: Mutex::default(),
            handled: Mutex::default(),
            kills: Mutex::default(),
            paused: AtomicBool::new(false),
            waiting: Mutex::default(),
        });
        let watching = state.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(watching.admin.clone(), &watching.namespace);
            // With a backoff, a watch that fails at once (the client's connections gone while the
            // runtime shuts down) sleeps between retries instead of spinning without yielding,
            // which would keep the runtime from ever shutting down.
            let mut events = watcher(pods, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    _ => continue,
                };
                watching.clone().saw(pod).await;
            }
        });
        Kubelet { state, task }
    }

    /// While paused, new pods are left `Pending` (unbound), as with no node to run them; when the
    /// pause ends, they run.
    pub fn pause(&self, paused: bool) {
        self.state.paused.store(paused, Ordering::SeqCst);
        if !paused {
            let waiting: Vec<Pod> = self
                .state
                .waiting
                .lock()
                .unwrap()
                .drain()
                .map(|(_, p)| p)
                .collect();
            for pod in waiting {
                tokio::spawn(self.state.clone().saw(pod));
            }
        }
    }

    pub fn runs_of(&self, job: &str) -> Vec<i32> {
        let runs = self.state.runs.lock().unwrap();
        runs.get(job).map(|r| r.exit_codes.clone()).unwrap_or_default()
    }

    pub fn stderr_of(&self, job: &str) -> String {
        let runs = self.state.runs.lock().unwrap();
        runs.get(job).map(|r| r.stderr.clone()).unwrap_or_default()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl State {
    async fn saw(self: Arc<Self>, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            // Kill its process (if any) and confirm the deletion, as a kubelet does.
            if let Some(kill) = self.kills.lock().unwrap().remove(&uid) {
                let _ = kill.send(());
            }
            let api: Api<Pod> = Api::namespaced(self.admin.clone(), &self.namespace);
            let _ = api
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await;
            return;
        }
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if finished {
            return;
        }
        if self.paused.load(Ordering::SeqCst) {
            self.waiting.lock().unwrap().insert(uid, pod);
            return;
        }
        if !self.handled.lock().unwrap().insert(uid) {
            return;
        }
        tokio::spawn(async move { self.run(pod).await });
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    async fn patch_status(&self, name: &str, status: serde_json::Value) {
        let _ = self
            .pods()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await;
    }

    /// The container's environment, or the kubelet's reason for not starting it.
    async fn environment(&self, pod: &Pod) -> Result<Vec<(String, String)>, String> {
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), &self.namespace);
        let container = &pod.spec.as_ref().expect("a pod spec").containers[0];
        let mut env = Vec::new();
        for var in container.env.iter().flatten() {
            if let Some(value) = &var.value {
                env.push((var.name.clone(), value.clone()));
                continue;
            }
            let Some(selector) = var.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) else {
                continue;
            };
            let optional = selector.optional == Some(true);
            let secret = match secrets.get_opt(&selector.name).await {
                Ok(Some(secret)) => secret,
                Ok(None) if optional => continue,
                Ok(None) => return Err(format!("secret \"{}\" not found", selector.name)),
                Err(e) => return Err(format!("reading secret \"{}\": {e}", selector.name)),
            };
            match secret.data.as_ref().and_then(|d| d.get(&selector.key)) {
                Some(bytes) => env.push((var.name.clone(), String::from_utf8_lossy(&bytes.0).into_owned())),
                None if optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in Secret {}/{}",
                        selector.key, self.namespace, selector.name
                    ));
                }
            }
        }
        Ok(env)
    }

    async fn run(self: Arc<Self>, pod: Pod) {
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let job = pod
            .labels()
            .get("job-name")
            .cloned()
            .unwrap_or_else(|| name.clone());
        // Bound to this node, as the scheduler would.
        if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            });
            if let Err(e) = self
                .pods()
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                tracing::warn!(pod = %name, error = %e, "kubelet stand-in: binding failed");
                self.handled.lock().unwrap().remove(&uid);
                return;
            }
        }
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        // The environment, waiting (as a kubelet does) while a Secret or key is missing.
        let env = loop {
            match self.environment(&pod).await {
                Ok(env) => break env,
                Err(message) => {
                    self.patch_status(
                        &name,
                        json!({"phase": "Pending", "containerStatuses": [{
                            "name": container.name, "ready": false, "restartCount": 0,
                            "image": container.image, "imageID": "",
                            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}},
                        }]}),
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match self.pods().get_opt(&name).await {
                        Ok(Some(p)) if p.metadata.deletion_timestamp.is_none() => continue,
                        _ => return,
                    }
                }
            }
        };
        let now = || k8s_openapi::jiff::Timestamp::now().to_string();
        let started = now();
        self.patch_status(
            &name,
            json!({"phase": "Running", "startTime": started, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                   "containerStatuses": [{"name": container.name, "ready": true, "restartCount": 0,
                        "image": container.image, "imageID": "",
                        "state": {"running": {"startedAt": started}}}]}),
        )
        .await;
        let mut command = container.command.clone().unwrap_or_default();
        assert_eq!(
            command.first().map(String::as_str),
            Some("thumbnail-operator"),
            "the stand-in runs only the render binary"
        );
        command.remove(0);
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(command)
            .args(container.args.clone().unwrap_or_default())
            .env_clear()
            .envs(env)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("running the render binary");
        let (kill, killed) = tokio::sync::oneshot::channel();
        self.kills.lock().unwrap().insert(uid.clone(), kill);
        let (code, stderr) = tokio::select! {
            out = child.wait_with_output() => {
                let out = out.expect("the render binary");
                (out.status.code().unwrap_or(137), String::from_utf8_lossy(&out.stderr).into_owned())
            }
            _ = killed => (137, "killed: the pod was deleted".to_owned()),
        };
        self.kills.lock().unwrap().remove(&uid);
        {
            let mut runs = self.runs.lock().unwrap();
            let run = runs.entry(job).or_default();
            run.exit_codes.push(code);
            run.stderr = stderr;
        }
        let (phase, reason) = if code == 0 {
            ("Succeeded", "Completed")
        } else {
            ("Failed", "Error")
        };
        self.patch_status(
            &name,
            json!({"phase": phase, "containerStatuses": [{"name": container.name, "ready": false,
                    "restartCount": 0, "image": container.image, "imageID": "",
                    "state": {"terminated": {"exitCode": code, "reason": reason,
                              "startedAt": started, "finishedAt": now()}}}]}),
        )
        .await;
    }
}
