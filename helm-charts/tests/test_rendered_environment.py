"""The chart's environment, run for real: render the chart with the real Helm engine, start the
real binaries with exactly the environment a kubelet would give their containers, upload an image
and look where it lands in the bucket.

Needs the servers scripts/test.sh starts (PostgreSQL, S3 and the real Kubernetes control plane:
the TEST_* variables, see scripts/dev-services.sh and scripts/lib/kube-control-plane.sh) and the
debug binaries its test step builds (thumbnail-api and thumbnail-operator under target/debug, or
THUMBNAIL_BIN_DIR). scripts/test.sh sets CHART_REQUIRE_SERVICES=1, so that there a missing piece
fails instead of skipping.

What differs from a pod, and why, is only what a pod's surroundings give it:
- volume mounts (DATA_DIR=/data, /tmp) are temporary directories, passed as `--data-dir`;
- the pod's own network namespace: each process listens on a free loopback port (`--host`,
  `--port`; flags win over the environment, so the rendered HOST and PORT stay as rendered);
- the downward API (`fieldRef` metadata.name and metadata.namespace) is resolved as the kubelet
  would: a pod name and the release's namespace;
- the service-account mount that gives in-cluster access to the Kubernetes API: a kubeconfig
  (KUBECONFIG) with the token of the component's own ServiceAccount, which the chart's RBAC,
  applied to the control plane in fresh namespaces, grants exactly what it grants in a cluster.
"""

import base64
import json
import os
import pathlib
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import boto3
import botocore.config
import pytest
import yaml

from test_chart import CHART, container, one, render

REPO = CHART.parent
SETTINGS = json.loads((CHART / "tests" / "binary-env.json").read_text())["commands"]
FIXTURE = REPO / "api" / "tests" / "fixtures" / "photo.jpg"
DEADLINE = 120


def required(what):
    if os.environ.get("CHART_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} (CHART_REQUIRE_SERVICES=1)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def services():
    names = ["TEST_DATABASE_URL", "TEST_S3_ENDPOINT", "TEST_S3_ACCESS_KEY", "TEST_S3_SECRET_KEY",
             "TEST_KUBE_URL", "TEST_KUBE_CA", "TEST_KUBECONFIG", "TEST_KUBECTL"]
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        required(f"{', '.join(missing)} unset: run through scripts/test.sh (which starts PostgreSQL, "
                 "S3 and the Kubernetes control plane)")
    return {n: os.environ[n] for n in names} | {"TEST_S3_REGION": os.environ.get("TEST_S3_REGION", "us-east-1")}


@pytest.fixture(scope="module")
def binaries():
    bin_dir = pathlib.Path(os.environ.get("THUMBNAIL_BIN_DIR", REPO / "target" / "debug"))
    found = {name: bin_dir / name for name in ("thumbnail-api", "thumbnail-operator")}
    missing = [str(p) for p in found.values() if not os.access(p, os.X_OK)]
    if missing:
        required(f"missing {', '.join(missing)}: `cargo build --workspace --all-targets` "
                 "(scripts/test.sh's test step builds them)")
    return found


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database(admin_url):
    """A new, empty database on the test PostgreSQL (psql comes with Debian's postgresql)."""
    name = "chart_" + uuid.uuid4().hex[:12]
    psql = next((str(p) for p in sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/psql"))), "psql")
    subprocess.run([psql, admin_url, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True, timeout=60)
    return admin_url.rsplit("/", 1)[0] + "/" + name


def container_env(docs, container_spec, pod_name, namespace):
    """The environment a kubelet gives this container: envFrom (ConfigMap, Secret) first, then
    env (values and the downward API), as Kubernetes orders them."""
    env = {}
    for source in container_spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        elif "secretRef" in source:
            secret = one(docs, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        else:
            pytest.fail(f"envFrom source this test cannot resolve: {source}")
    for item in container_spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            data = one(docs, "Secret", ref["name"]).get("data", {})
            if ref["key"] in data:
                env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
            elif not ref.get("optional", False):
                pytest.fail(f"the Secret {ref['name']} has no key {ref['key']}: {item}")
        else:
            pytest.fail(f"env entry this test cannot resolve: {item}")
    return env


def kubectl(services, *args, stdin=None, check=True):
    out = subprocess.run([services["TEST_KUBECTL"], "--kubeconfig", services["TEST_KUBECONFIG"], *args],
                         input=stdin, capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def crd_for_1_20():
    """The chart's CRD without what Kubernetes 1.20 does not know (CEL rules arrived in 1.25,
    selectableFields in 1.30): the test control plane refuses them. test_chart.py checks those."""
    def strip(v):
        if isinstance(v, dict):
            v.pop("x-kubernetes-validations", None)
            v.pop("selectableFields", None)
            for item in v.values():
                strip(item)
        elif isinstance(v, list):
            for item in v:
                strip(item)
        return v
    return yaml.safe_dump(strip(yaml.safe_load((CHART / "files" / "thumbnailjobs.thumbnailer.dev.yaml").read_text())))


def service_account_token(services, namespace, name):
    """The token Kubernetes 1.20's token controller made for a ServiceAccount."""
    until = time.monotonic() + DEADLINE
    while time.monotonic() < until:
        secret = kubectl(services, "-n", namespace, "get", "serviceaccount", name,
                         "-o", "jsonpath={.secrets[0].name}", check=False).strip()
        if secret:
            token = kubectl(services, "-n", namespace, "get", "secret", secret,
                            "-o", "jsonpath={.data.token}", check=False).strip()
            if token:
                return base64.b64decode(token).decode()
        time.sleep(0.2)
    pytest.fail(f"no token for the ServiceAccount {namespace}/{name}")


def kubeconfig(services, path, token, namespace):
    """What a pod's service-account mount gives a client: the server, its CA and a token."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": services["TEST_KUBE_URL"],
                                                  "certificate-authority": services["TEST_KUBE_CA"]}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa", "namespace": namespace}}],
        "current-context": "sa",
    }))
    path.chmod(0o600)
    return str(path)


def http(url, data=None, headers=None, timeout=10):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(url, what, process, log):
    until = time.monotonic() + DEADLINE
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if http(url, timeout=5)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > until:
            pytest.fail(f"{what} did not answer {url} in {DEADLINE} s:\n{log.read_text()}")
        time.sleep(0.1)


def upload(base, path, headers):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    status, answer = http(f"{base}/api/v1/thumbnails/", body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}", **headers})
    assert status == 202, answer
    return json.loads(answer)["job_id"]


class Processes:
    """Processes started by one test, all stopped (SIGTERM, then SIGKILL) at its end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.running = []

    def start(self, name, argv, env):
        log = self.workdir / f"{name}.log"
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                                   stderr=subprocess.STDOUT)
        self.running.append(process)
        return process, log

    def stop_all(self):
        for process in reversed(self.running):
            if process.poll() is None:
                process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.parametrize("key_prefix, expected_prefix", [(None, ""), ("tenant-a", "tenant-a/")],
                         ids=["chart-default", "tenant-a"])
def test_an_upload_lands_at_the_original_services_keys(services, binaries, key_prefix, expected_prefix):
    suffix = uuid.uuid4().hex[:10]
    release, namespace, jobs_namespace = f"c{suffix}", f"op-c{suffix}", f"ws-c{suffix}"
    bucket = f"chart-{suffix}"
    values = {
        "s3": {"endpointUrl": services["TEST_S3_ENDPOINT"], "bucketName": bucket,
               "region": services["TEST_S3_REGION"], "createBucket": True},
        "secret": {"awsAccessKeyId": services["TEST_S3_ACCESS_KEY"],
                   "awsSecretAccessKey": services["TEST_S3_SECRET_KEY"],
                   "databaseUrl": fresh_database(services["TEST_DATABASE_URL"])},
        # Its own namespace for ThumbnailJobs: the control plane is shared with other tests.
        "operator": {"replicas": 1, "watchNamespace": jobs_namespace},
    }
    if key_prefix is not None:
        values["s3"]["keyPrefix"] = key_prefix
    docs = render(values, name=release, namespace=namespace)
    fullname = f"{release}-thumbnail"
    api_deploy = one(docs, "Deployment", f"{fullname}-api")
    operator_deploy = one(docs, "Deployment", f"{fullname}-operator")
    api_c, migrate_c = container(api_deploy, "api"), container(api_deploy, "migrate")
    operator_c = container(operator_deploy, "operator")
    for c in (api_c, migrate_c, operator_c):
        assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp", "/data"], c["volumeMounts"]

    # The cluster side of the release: namespaces, the CRD, the chart's identities, permissions
    # and Secret (what `helm install` would create besides the workloads).
    cluster_side = [d for d in docs if d["kind"] in
                    {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret"}]
    for d in cluster_side:
        if d["kind"] in {"ServiceAccount", "Role", "RoleBinding", "Secret"}:
            d["metadata"].setdefault("namespace", namespace)
    manifests = yaml.safe_dump_all([{k: v for k, v in d.items() if not k.startswith("_")} for d in cluster_side])
    kubectl(services, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=crd_for_1_20())
    kubectl(services, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/thumbnailjobs.thumbnailer.dev")
    kubectl(services, "create", "namespace", namespace)
    kubectl(services, "create", "namespace", jobs_namespace)

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        processes = Processes(work)
        try:
            kubectl(services, "apply", "-f", "-", stdin=manifests)

            def surroundings(account):
                # What the service-account mount would give: this component's own identity.
                token = service_account_token(services, namespace, f"{fullname}-{account}")
                return {"PATH": os.environ["PATH"],
                        "KUBECONFIG": kubeconfig(services, work / f"{account}.kubeconfig", token, namespace)}

            def argv(c, port=None):
                binary = binaries[c["command"][0]]
                out = [str(binary), *c["command"][1:], *c.get("args", [])]
                if port is not None:
                    out += ["--host", "127.0.0.1", "--port", str(port)]
                return out

            # 1. The init container: migrations.
            api_surroundings = surroundings("api")
            migrate_env = container_env(docs, migrate_c, f"{fullname}-api-0", namespace) | api_surroundings
            done = subprocess.run(argv(migrate_c), env=migrate_env, capture_output=True, text=True,
                                  timeout=DEADLINE)
            assert done.returncode == 0, done.stderr

            # 2. The API (it creates the bucket: s3.createBucket), then the operator.
            api_port = free_port()
            api_env = container_env(docs, api_c, f"{fullname}-api-0", namespace)
            api, api_log = processes.start(
                "api", argv(api_c, api_port) + ["--data-dir", str(work / "api-data")],
                api_env | api_surroundings)
            base = f"http://127.0.0.1:{api_port}"
            wait_for(f"{base}/ready", "thumbnail-api", api, api_log)
            operator_port = free_port()
            operator, operator_log = processes.start(
                "operator", argv(operator_c, operator_port),
                container_env(docs, operator_c, f"{fullname}-operator-0", namespace) | surroundings("operator"))
            wait_for(f"http://127.0.0.1:{operator_port}/readyz", "thumbnail-operator", operator, operator_log)

            # 3. An upload, run to SUCCESS by the operator, with the admin key the chart generated
            # (the chart's default is AUTH_MODE=api-key).
            assert api_env["AUTH_MODE"] == "api-key", api_env["AUTH_MODE"]
            auth = {"Authorization": f"Bearer {api_env['ADMIN_API_KEY']}"}
            status, answer = http(f"{base}/api/v1/jobs/", timeout=30)
            assert status == 401, (status, answer)
            job_id = upload(base, FIXTURE, auth)
            until = time.monotonic() + DEADLINE
            while True:
                _, answer = http(f"{base}/api/v1/jobs/{job_id}?wait=10", headers=auth, timeout=30)
                job = json.loads(answer)
                if job["status"] in ("SUCCESS", "FAILURE"):
                    break
                assert time.monotonic() < until, f"job still {job['status']}:\n{operator_log.read_text()}"
            assert job["status"] == "SUCCESS", (job, operator_log.read_text())

            # 4. Where it landed: the original service's layout, under the chosen prefix only.
            original = f"{expected_prefix}images/original/{job_id}.jpg"
            thumbnail = f"{expected_prefix}images/thumbnail/{job_id}.jpg"
            assert job["source"]["key"] == original, job
            assert job["result"]["key"] == thumbnail, job
            s3 = boto3.client("s3", endpoint_url=services["TEST_S3_ENDPOINT"],
                              aws_access_key_id=services["TEST_S3_ACCESS_KEY"],
                              aws_secret_access_key=services["TEST_S3_SECRET_KEY"],
                              region_name=services["TEST_S3_REGION"],
                              config=botocore.config.Config(s3={"addressing_style": "path"}))
            keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
            assert original in keys and thumbnail in keys, keys
            assert all(k.startswith(f"{expected_prefix}images/") for k in keys), keys
            assert not any("images/images/" in k for k in keys), keys
        finally:
            processes.stop_all()
            kubectl(services, "delete", "namespace", namespace, jobs_namespace, "--wait=false", check=False)
            for d in cluster_side:
                if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                    kubectl(services, "delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false",
                            check=False)
