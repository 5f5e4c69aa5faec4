//! The real Kubernetes control plane the tests run against (etcd, kube-apiserver and
//! kube-controller-manager 1.20, started by `scripts/test.sh`; see
//! `scripts/lib/kube-control-plane.sh`), and one *tenant* of it per test: two fresh namespaces
//! (the operator's, where render Jobs, the Lease and the credentials Secret live, and the one it
//! watches) with the chart's ServiceAccounts, Roles and bindings rendered by the real Helm engine
//! (`helm-charts/tests/render_rbac.py`) and applied with the real `kubectl`. The operator and the
//! API then run with those ServiceAccounts' tokens, so a verb missing from the chart's RBAC fails.
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::OnceCell;

const HOW_TO_RUN: &str = "these tests need a real Kubernetes control plane: run them with `scripts/test.sh`, or \
     `scripts/kube-control-plane.sh start DIR` and `eval \"$(scripts/kube-control-plane.sh env DIR)\"` \
     (plus the PostgreSQL and S3 servers of `scripts/dev-services.sh`)";

pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: {HOW_TO_RUN}"),
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// How to reach the control plane.
pub struct Cluster {
    pub url: String,
    pub ca_pem: Vec<u8>,
    pub admin_token: String,
    /// The admin's kubeconfig, for `kubectl`.
    pub kubeconfig: PathBuf,
    /// The real `kubectl` (a version that talks to 1.20).
    pub kubectl: PathBuf,
}

impl Cluster {
    pub fn from_env() -> Cluster {
        let ca = env("TEST_KUBE_CA");
        Cluster {
            url: env("TEST_KUBE_URL"),
            ca_pem: std::fs::read(&ca).unwrap_or_else(|e| panic!("reading {ca}: {e}")),
            admin_token: env("TEST_KUBE_ADMIN_TOKEN"),
            kubeconfig: env("TEST_KUBECONFIG").into(),
            kubectl: env("TEST_KUBECTL").into(),
        }
    }

    /// A client of the API server at `url` (the server itself, or a proxy in front of it) with a
    /// bearer token.
    pub fn client_at(&self, url: &str, token: &str) -> kube::Client {
        thumbnail_operator::install_crypto_provider();
        let mut config = kube::Config::new(url.parse().expect("a URL"));
        config.root_cert = Some(pem_certificates(&self.ca_pem));
        config.auth_info.token = Some(token.to_owned().into());
        config.connect_timeout = Some(Duration::from_secs(10));
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("a Kubernetes client")
    }

    pub fn client(&self, token: &str) -> kube::Client {
        self.client_at(&self.url, token)
    }

    pub fn admin(&self) -> kube::Client {
        self.client(&self.admin_token)
    }

    /// `kubectl` as the admin, with `stdin`; its status and output.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        kubectl_with(&self.kubectl, &self.kubeconfig, args, stdin)
    }
}

/// Run the real kubectl with a kubeconfig; (success, stdout, stderr).
pub fn kubectl_with(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    // kubectl 1.27's `explain` asks for OpenAPI v3, which 1.20 does not serve; v2 is served.
    cmd.env("KUBECTL_EXPLAIN_OPENAPIV3", "false");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The DER certificates of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                current.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(current.as_bytes())
                        .expect("base64 in a PEM certificate"),
                );
            }
            l if inside => current.push_str(l),
            _ => {}
        }
    }
    assert!(!out.is_empty(), "no certificate in the CA file");
    out
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// The cluster, with the ThumbnailJob CRD installed (once per test binary).
pub async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let cluster = Cluster::from_env();
            install_crd(&cluster).await;
            cluster
        })
        .await
}

/// The committed CRD without what Kubernetes 1.20 does not know (`x-kubernetes-validations`, CEL
/// rules, arrived in 1.25; `selectableFields` in 1.30): a 1.20 server refuses the CRD with them.
/// The chart test checks the CEL rules themselves.
pub fn crd_for_1_20() -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.remove("selectableFields");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(repo().join(thumbnail_crds::CRD_PATH)).unwrap();
    let mut value: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    strip(&mut value);
    serde_yaml::to_string(&value).unwrap()
}

async fn install_crd(cluster: &Cluster) {
    let (ok, out, err) = cluster.kubectl(&["apply", "--server-side", "-f", "-"], Some(&crd_for_1_20()));
    assert!(ok, "kubectl apply of the CRD failed: {out}{err}");
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.admin());
    super::eventually("the CRD to be established", Duration::from_secs(30), || async {
        let crd = crds.get_opt(thumbnail_crds::CRD_NAME).await.ok()??;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// One test's share of the cluster.
pub struct Tenant {
    /// Helm release name.
    pub release: String,
    /// The operator's namespace (the release namespace): render Jobs, the Lease, Secrets.
    pub op_ns: String,
    /// Where ThumbnailJobs live (the chart's `operator.watchNamespace`).
    pub ns: String,
    pub operator_token: String,
    pub api_token: String,
    pub render_service_account: String,
    /// The Secret render Jobs read the S3 keys from (in `op_ns`).
    pub credentials_secret: String,
}

impl Tenant {
    /// Fresh namespaces, the chart's RBAC for them, the S3 keys as a Secret, and the tokens of the
    /// operator's and the API's ServiceAccounts.
    pub async fn new(cluster: &Cluster, s3_access_key: &str, s3_secret_key: &str) -> Tenant {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let release = format!("t{suffix}");
        let (op_ns, ns) = (format!("op-{suffix}"), format!("ws-{suffix}"));
        let admin = cluster.admin();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        for name in [&op_ns, &ns] {
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([("thumbnail-test".into(), "true".into())])),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            namespaces
                .create(&PostParams::default(), &namespace)
                .await
                .expect("a namespace");
        }
        let rbac = render_chart_rbac(
            &release,
            &op_ns,
            &serde_json::json!({"operator": {"watchNamespace": ns}}),
        );
        let (ok, out, err) = cluster.kubectl(&["apply", "-f", "-"], Some(&rbac));
        assert!(ok, "kubectl apply of the chart's RBAC failed: {out}{err}");
        let fullname = format!("{release}-thumbnail");
        let credentials_secret = format!("{fullname}-render-credentials");
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &op_ns);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(credentials_secret.clone()),
                ..ObjectMeta::default()
            },
            string_data: Some(BTreeMap::from([
                ("AWS_ACCESS_KEY_ID".into(), s3_access_key.to_owned()),
                ("AWS_SECRET_ACCESS_KEY".into(), s3_secret_key.to_owned()),
            ])),
            ..Secret::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("the credentials Secret");
        Tenant {
            operator_token: service_account_token(&admin, &op_ns, &format!("{fullname}-operator")).await,
            api_token: service_account_token(&admin, &op_ns, &format!("{fullname}-api")).await,
            render_service_account: format!("{fullname}-render"),
            credentials_secret,
            release,
            op_ns,
            ns,
        }
    }
}

/// The chart's ServiceAccounts, Roles, ClusterRoles and bindings for a release, as YAML.
pub fn render_chart_rbac(release: &str, namespace: &str, values: &serde_json::Value) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(repo().join("helm-charts/tests/render_rbac.py"))
        .args([
            "--release",
            release,
            "--namespace",
            namespace,
            "--values",
            &values.to_string(),
        ])
        .output()
        .expect("running helm-charts/tests/render_rbac.py (python3 with helm-python-sdk)");
    assert!(
        out.status.success(),
        "rendering the chart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The token the token controller made for a ServiceAccount (Kubernetes 1.20 makes one Secret per
/// ServiceAccount).
pub async fn service_account_token(admin: &kube::Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    super::eventually(
        &format!("a token for the ServiceAccount {namespace}/{name}"),
        Duration::from_secs(30),
        || async {
            let account = accounts.get_opt(name).await.ok()??;
            let secret = account.secrets?.into_iter().find_map(|s| s.name)?;
            let secret = secrets.get_opt(&secret).await.ok()??;
            let token = secret.data?.get("token")?.0.clone();
            String::from_utf8(token).ok().filter(|t| !t.is_empty())
        },
    )
    .await
}

/// A namespaced object applied as the admin (server-side apply), for test set-up.
pub async fn admin_apply<K>(admin: &kube::Client, namespace: &str, object: &K)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(admin.clone(), namespace);
    let name = object.meta().name.clone().expect("a name");
    api.patch(
        &name,
        &PatchParams::apply("thumbnail-tests").force(),
        &Patch::Apply(object),
    )
    .await
    .expect("applying a test object");
}
