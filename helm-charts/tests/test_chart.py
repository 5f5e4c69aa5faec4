"""Checks of the Helm chart with the real Helm engine (helm-python-sdk wraps Helm's Go SDK).

- lint --strict passes with the default values, deployment/dev-values.yaml and everything on;
- every rendered manifest validates with kubernetes-validate --strict against Kubernetes 1.30
  and the newest version the package knows;
- the values schema refuses wrong types and unknown keys;
- the example ThumbnailJobs validate against the CRD's openAPIV3Schema (and its CEL rules);
- RBAC grants exactly the table of crds/src/rbac.rs (committed as files/rbac-table.json, which templates/rbac.yaml reads);
- Deployments carry the hardened securityContext; selectors use only immutable labels.
"""

import copy
import json
import pathlib
import re

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart

from conftest import VALIDATED

CHART = pathlib.Path(__file__).resolve().parent.parent
REPO = CHART.parent
CRD_FILE = CHART / "files" / "thumbnailjobs.thumbnailer.dev.yaml"
RBAC_TABLE = CHART / "files" / "rbac-table.json"
EXAMPLES = sorted((REPO / "deployment" / "examples").glob("*.yaml"))
RELEASE = "thumbnail"
NAMESPACE = "thumbnails"

OLDEST = "1.30.0"
NEWEST = kubernetes_validate.utils.latest_version()
if NEWEST.count(".") == 1:
    NEWEST += ".0"
VERSIONS = [OLDEST, NEWEST]

SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}

# The environment variables each command of the binaries reads, generated from their clap
# definitions (testing/env-contract; a cargo test fails when this file is stale).
BINARY_ENV = json.loads((CHART / "tests" / "binary-env.json").read_text())["commands"]

DEV_VALUES = yaml.safe_load((REPO / "deployment" / "dev-values.yaml").read_text())

ALL_ON = {
    "api": {
        "ingress": {"enabled": True, "className": "nginx", "tlsSecretName": "thumbnails-tls",
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "25m"}},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
        "workers": 4,
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "podAnnotations": {"example.com/a": "b"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "thumbs", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "api"}},
        }],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/thumbs"}},
    },
    "operator": {"replicas": 2, "renderImage": "registry.example.com/thumbnail:1.2.3"},
    "imagePullSecrets": [{"name": "regcred"}],
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "postgresql": {"enabled": True, "persistence": {"enabled": True, "storageClass": "standard"}},
    "minio": {"enabled": True, "persistence": {"enabled": True}},
    "s3": {"publicEndpointUrl": "https://s3.example.com"},
}

SCENARIOS = {
    "default": {},
    "dev-values": DEV_VALUES,
    "all-on": ALL_ON,
    "watch-namespace": {"operator": {"watchNamespace": "images"}},
    "existing-secret": {"secret": {"existingSecret": "thumbnail-credentials"}, "crds": {"install": False},
                        "rbac": {"aggregateToDefaultRoles": False},
                        "auth": {"adminKey": {"existingSecret": "thumbnail-admin", "secretKey": "key"}}},
    "jwt": {"auth": {"mode": "jwt", "metrics": True, "jwt": {"issuer": "https://login.example.com/realms/main",
                                                           "audience": "thumbnail-api"}},
            "quotas": {"uploadsPerMinute": 120, "trustedProxyHops": 1}},
}

_CHART = Chart.load(str(CHART))


def render(values, name=RELEASE, namespace=NAMESPACE):
    """The rendered manifests (NOTES.txt left out) as a list of dicts."""
    out = _CHART.render(copy.deepcopy(values), name=name, namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                doc["_template"] = path
                docs.append(doc)
    return docs


def notes(values):
    out = _CHART.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def strip(doc):
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def component_of(doc):
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def container(deploy, name):
    spec = deploy["spec"]["template"]["spec"]
    return next(c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name)


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request):
    return request.param, render(SCENARIOS[request.param])


# --- lint -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_strict(name):
    report = helm_python.lint(str(CHART), SCENARIOS[name], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


# --- Kubernetes schemas -----------------------------------------------------------------------------

def check_service_monitor(doc, docs):
    """No ServiceMonitor schema ships with kubernetes-validate: check its shape and its target."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc["spec"]) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}
    selector = doc["spec"]["selector"]["matchLabels"]
    services = [s for s in of_kind(docs, "Service") if s["spec"]["selector"] == selector]
    assert len(services) == 1, "the ServiceMonitor must select exactly one Service"
    ports = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in doc["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"] in ports
        assert re.fullmatch(r"\d+s", endpoint["interval"])


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_strict(scenario, version):
    name, docs = scenario
    failures = []
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)
            continue
        try:
            kubernetes_validate.validate(strip(doc), version, strict=True)
            VALIDATED[version] += 1
        except kubernetes_validate.ValidationError as e:
            failures.append(f"{doc['kind']}/{doc['metadata'].get('name')} ({doc['_template']}): {e.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("version", VERSIONS)
def test_crd_file_validates_strict(version):
    crd = yaml.safe_load(CRD_FILE.read_text())
    kubernetes_validate.validate(crd, version, strict=True)
    VALIDATED[version] += 1


def test_crd_template_is_the_generated_file():
    crd_docs = of_kind(render({}), "CustomResourceDefinition")
    assert len(crd_docs) == 1
    rendered = strip(crd_docs[0])
    meta = rendered["metadata"]
    assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert meta.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
    meta.pop("annotations")
    assert rendered == yaml.safe_load(CRD_FILE.read_text())
    assert not of_kind(render({"crds": {"install": False}}), "CustomResourceDefinition")
    unkept = of_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")[0]
    assert "annotations" not in unkept["metadata"]


def test_crd_contract():
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "thumbnailjobs.thumbnailer.dev"
    assert spec["group"] == "thumbnailer.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["tj"] and spec["names"]["categories"] == ["thumbnails"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Source", "Outputs", "Duration", "Age"} <= columns


# --- values schema ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [
    {"api": {"replicas": "two"}},
    {"operator": {"leaderElection": "yes"}},
    {"log": {"format": "xml"}},
    {"api": {"replicaz": 2}},
    {"s3": {"bucketName": 42}},
    {"auth": {"mode": "basic"}},
    {"auth": {"mode": "jwt"}},
    {"auth": {"mode": "jwt", "jwt": {"issuer": "https://login.example.com"}}},
    {"quotas": {"maxQueuedJobs": -1}},
    {"quotas": {"uploadsPerSecond": 5}},
])
def test_values_schema_refuses(values):
    with pytest.raises(helm_python.HelmValuesError):
        _CHART.render(values, name=RELEASE, namespace=NAMESPACE)
    report = helm_python.lint(str(CHART), values, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])


# --- the CRD schema against the examples --------------------------------------------------------------

def to_json_schema(node, root=False):
    """openAPIV3Schema -> JSON Schema, with Kubernetes' strict field validation (unknown fields
    refused) and `nullable`."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("nullable"):
        out.pop("nullable")
        out["type"] = [node["type"], "null"]
    if node.get("type") == "object" and "properties" in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if root:
        out["properties"] = dict(out["properties"], apiVersion={"const": "thumbnailer.dev/v1alpha1"},
                                 kind={"const": "ThumbnailJob"}, metadata={"type": "object"})
        out["required"] = sorted(set(out.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return out


def walk_schema(node, value, path="$"):
    """Yields (schema node, value, path) for every value, for the x-kubernetes-* checks."""
    yield node, value, path
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                yield from walk_schema(sub, value[key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            yield from walk_schema(node["items"], item, f"{path}[{i}]")


def cel_errors(schema, new, old=None):
    """Evaluates the x-kubernetes-validations rules with a CEL engine; list-map key uniqueness."""
    import cel

    errors = []
    old_values = {p: v for _, v, p in walk_schema(schema, old)} if old is not None else {}
    for node, value, path in walk_schema(schema, new):
        if node.get("x-kubernetes-list-type") == "map":
            keys = [tuple(item.get(k) for k in node["x-kubernetes-list-map-keys"]) for item in value]
            if len(keys) != len(set(keys)):
                errors.append(f"{path}: duplicate keys {keys}")
        for rule in node.get("x-kubernetes-validations", []):
            transition = "oldSelf" in rule["rule"]
            if transition and path not in old_values:
                continue
            context = {"self": value}
            if transition:
                context["oldSelf"] = old_values[path]
            if cel.evaluate(rule["rule"], context) is not True:
                errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    return errors


CRD_SCHEMA = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
JSON_SCHEMA = to_json_schema(CRD_SCHEMA, root=True)


def crd_errors(obj, old=None):
    validator = jsonschema.Draft202012Validator(JSON_SCHEMA)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    return errors + cel_errors(CRD_SCHEMA, obj, old)


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"basic.yaml", "multi-output.yaml", "job-mode.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_crd(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert crd_errors(doc) == [], path
        assert crd_errors(doc, old=doc) == [], "an unchanged re-apply must pass the transition rules"


def test_basic_example_is_the_default_thumbnail():
    doc = yaml.safe_load((REPO / "deployment" / "examples" / "basic.yaml").read_text())
    assert doc["spec"] == {"source": {"key": "images/original/example.jpg"}}
    outputs = CRD_SCHEMA["properties"]["spec"]["properties"]["outputs"]
    assert outputs["default"] == [{"name": "default", "width": 100, "height": 100, "fit": "cover", "quality": 80}]


def _basic():
    return yaml.safe_load((REPO / "deployment" / "examples" / "basic.yaml").read_text())


def _with(spec_changes):
    doc = _basic()
    doc["spec"].update(copy.deepcopy(spec_changes))
    return doc


OUT = {"name": "a", "width": 10, "height": 10}


@pytest.mark.parametrize("changes", [
    {"source": {}},
    {"source": {"key": ""}},
    {"source": {"key": "k", "bucket": "Not_A_Bucket"}},
    {"outputs": []},
    {"outputs": [dict(OUT, width=0)]},
    {"outputs": [dict(OUT, height=4097)]},
    {"outputs": [dict(OUT, fit="stretch")]},
    {"outputs": [dict(OUT, format="bmp")]},
    {"outputs": [dict(OUT, quality=101)]},
    {"outputs": [dict(OUT, name="Bad Name")]},
    {"outputs": [dict(OUT, size=3)]},
    {"outputs": [OUT, OUT]},
    {"outputs": [dict(OUT, name=f"o{i}") for i in range(17)]},
    {"execution": "cluster"},
    {"backoffLimit": 11},
    {"ttlSecondsAfterFinished": -1},
    {"activeDeadlineSeconds": 0},
    {"jobId": "not-a-uuid"},
    {"unknownField": True},
], ids=lambda c: json.dumps(c)[:60])
def test_crd_refuses_nonsense(changes):
    assert crd_errors(_with(changes)), changes


def test_crd_transition_rules():
    uuid = "0190f3c2-7a1b-7c3d-8e4f-5a6b7c8d9e0f"
    old = _with({"jobId": uuid})
    assert crd_errors(_with({"jobId": uuid, "owner": "me"}), old=old) == []
    assert crd_errors(_with({"jobId": uuid}), old=_basic()) == [], "jobId may be set once"
    assert crd_errors(_basic(), old=old), "jobId may not be removed"
    assert crd_errors(_with({"jobId": uuid.replace("0", "1")}), old=old), "jobId may not change"
    assert crd_errors(_with({"source": {"key": "other.jpg"}}), old=_basic()), "source is immutable"
    assert crd_errors(_with({"outputs": [OUT]}), old=_with({"outputs": [dict(OUT, width=11)]})), \
        "outputs are immutable"


# --- RBAC -------------------------------------------------------------------------------------------

def granted(docs):
    """{component: {(apiGroup, resource, verb, kind, namespace)}} from the chart's bindings."""
    sa_component = {(sa["metadata"]["namespace"], sa["metadata"]["name"]): component_of(sa)
                    for sa in of_kind(docs, "ServiceAccount")}
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r
             for r in of_kind(docs, "Role") + of_kind(docs, "ClusterRole")}
    grants = {c: set() for c in sa_component.values()}
    for binding in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding"):
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            component = sa_component[(subject["namespace"], subject["name"])]
            for rule in role["rules"]:
                assert "resourceNames" not in rule and "nonResourceURLs" not in rule
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert "*" not in (group, resource, verb)
                            grants[component].add((group, resource, verb, binding["kind"], namespace))
    return grants


def expected(table, watch_namespace):
    out = {}
    for component, rules in table.items():
        out[component] = set()
        for rule in rules:
            if rule["scope"] == "ownNamespace":
                where = ("RoleBinding", NAMESPACE)
            elif component == "api":
                where = ("RoleBinding", watch_namespace or NAMESPACE)
            elif watch_namespace:
                where = ("RoleBinding", watch_namespace)
            else:
                where = ("ClusterRoleBinding", None)
            for verb in rule["verbs"]:
                out[component].add((rule["apiGroup"], rule["resource"], verb) + where)
    return out


@pytest.mark.parametrize("name", ["default", "watch-namespace", "all-on"])
def test_rbac_is_exactly_the_table(name):
    docs = render(SCENARIOS[name])
    table = json.loads(RBAC_TABLE.read_text())
    watch = SCENARIOS[name].get("operator", {}).get("watchNamespace", "")
    assert granted(docs) == expected(table, watch)
    operator = one(docs, "Deployment", f"{RELEASE}-operator")
    env = {e["name"]: e.get("value") for e in container(operator, "operator")["env"]}
    assert env["WATCH_NAMESPACE"] == watch
    api = one(docs, "Deployment", f"{RELEASE}-api")
    # The API creates ThumbnailJobs where the operator watches.
    assert {e["name"]: e.get("value") for e in container(api, "api")["env"]}["KUBE_NAMESPACE"] == (watch or NAMESPACE)


def test_one_service_account_per_component():
    docs = render({})
    accounts = {component_of(sa): sa for sa in of_kind(docs, "ServiceAccount")}
    assert set(accounts) == {"api", "operator", "render"}
    assert accounts["render"]["automountServiceAccountToken"] is False
    for component in ("api", "operator"):
        deploy = one(docs, "Deployment", f"{RELEASE}-{component}")
        assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == accounts[component]["metadata"]["name"]
    operator = one(docs, "Deployment", f"{RELEASE}-operator")
    env = {e["name"]: e.get("value") for e in container(operator, "operator")["env"]}
    assert env["RENDER_SERVICE_ACCOUNT"] == accounts["render"]["metadata"]["name"]


def test_no_rbac_when_disabled():
    docs = render({"rbac": {"create": False}})
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


# --- pod security -----------------------------------------------------------------------------------

HARDENED = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}


def test_deployments_are_hardened(scenario):
    _, docs = scenario
    workloads = of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        where = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            for key, value in HARDENED.items():
                assert sc.get(key) is value, f"{where}/{c['name']}: {key}"
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}/{c['name']}: a writable /tmp"
            assert c.get("resources", {}).get("requests"), f"{where}/{c['name']}: resources"
    for component in ("api", "operator"):
        deploy = one(docs, "Deployment", f"{RELEASE}-{component}")
        volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["data"]
        assert "/data" in {m["mountPath"] for m in container(deploy, component)["volumeMounts"]}


def test_probes_and_ports():
    docs = render({})
    api = container(one(docs, "Deployment", f"{RELEASE}-api"), "api")
    assert api["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    operator = container(one(docs, "Deployment", f"{RELEASE}-operator"), "operator")
    assert operator["ports"][0]["containerPort"] == 8081
    assert operator["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert operator["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["command"] == ["thumbnail-api"] and operator["command"] == ["thumbnail-operator"]
    migrate = container(one(docs, "Deployment", f"{RELEASE}-api"), "migrate")
    assert migrate["command"] == ["thumbnail-api", "migrate"]


# --- labels and selectors ---------------------------------------------------------------------------

def selectors(docs):
    for d in docs:
        kind = d["kind"]
        if kind in ("Deployment", "StatefulSet"):
            yield d, d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
        elif kind == "PodDisruptionBudget":
            yield d, d["spec"]["selector"]["matchLabels"], None
        elif kind == "Service":
            yield d, d["spec"]["selector"], None
        elif kind == "ServiceMonitor":
            yield d, d["spec"]["selector"]["matchLabels"], None


def test_selectors_use_only_immutable_labels(scenario):
    _, docs = scenario
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for doc, selector, template_labels in selectors(docs):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert set(selector) == SELECTOR_KEYS, where
        if template_labels is not None:
            assert selector.items() <= template_labels.items(), where
        if doc["kind"] in ("Service", "PodDisruptionBudget"):
            matching = [p for p in pods if selector.items() <= p.items()]
            assert len(matching) == 1, f"{where} selects {len(matching)} workloads"


def test_every_object_has_standard_labels(scenario):
    _, docs = scenario
    for d in docs:
        labels = d["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/version", "helm.sh/chart"):
            assert key in labels, f"{d['kind']}/{d['metadata']['name']}: {key}"


# --- environment contract ---------------------------------------------------------------------------

def env_names(docs, deploy, name):
    c = container(deploy, name)
    names = {e["name"] for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(one(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        elif "secretRef" in source:
            secret = [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == source["secretRef"]["name"]]
            names |= set(secret[0].get("data", {})) if secret else set()
    return names


def command_of(c):
    return " ".join(c["command"] + c.get("args", []))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_environment_is_what_the_binaries_read(name):
    """Every variable the chart gives a container is one its command reads (a misspelt or
    obsolete name would be ignored in silence), and the commands are ones the binaries have."""
    docs = render(SCENARIOS[name])
    checked = []
    for deploy, component in ((f"{RELEASE}-api", "api"), (f"{RELEASE}-operator", "operator")):
        d = one(docs, "Deployment", deploy)
        extra = {e["name"] for e in SCENARIOS[name].get(component, {}).get("extraEnv", [])}
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            command = command_of(c)
            assert command in BINARY_ENV, f"{deploy}/{c['name']}: no such command {command!r}"
            unknown = env_names(docs, d, c["name"]) - extra - set(BINARY_ENV[command])
            assert not unknown, f"{deploy}/{c['name']} ({command}) sets variables it never reads: {unknown}"
            checked.append(command)
    assert set(checked) == {"thumbnail-api", "thumbnail-api migrate", "thumbnail-operator"}, checked
    env = {e["name"]: e.get("value") for e in container(one(docs, "Deployment", f"{RELEASE}-api"), "api")["env"]}
    assert env["JOB_RUNNER"] == "kubernetes" and env["PORT"] == "8080"


def test_default_key_prefix_keeps_the_original_layout():
    """The original service stored images/original/{id}.{ext}; the binaries add images/ themselves,
    so the chart's default prefix is empty (a prefix "images" gave images/images/...)."""
    config = one(render({}), "ConfigMap", RELEASE)["data"]
    assert config["S3_KEY_PREFIX"] == ""
    assert one(render({"s3": {"keyPrefix": "tenant-a"}}), "ConfigMap", RELEASE)["data"]["S3_KEY_PREFIX"] == "tenant-a"


def test_dev_values_wire_postgres_and_minio():
    docs = render(DEV_VALUES)
    config = one(docs, "ConfigMap", RELEASE)["data"]
    assert config["S3_ENDPOINT_URL"] == f"http://{RELEASE}-minio:9000"
    assert config["S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000"
    api_env = {e["name"]: e.get("value") for e in container(one(docs, "Deployment", f"{RELEASE}-api"), "api")["env"]}
    assert api_env["S3_CREATE_BUCKET"] == "true"
    import base64
    secret = {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret", RELEASE)["data"].items()}
    assert secret["DATABASE_URL"] == f"postgres://thumbnail:thumbnail@{RELEASE}-postgresql:5432/thumbnail"
    assert secret["AWS_ACCESS_KEY_ID"] == "minioadmin"
    api = container(one(docs, "Deployment", f"{RELEASE}-api"), "api")
    assert api["image"] == "thumbnail:dev" and api["imagePullPolicy"] == "Never"
    assert {"Service", "StatefulSet"} <= {d["kind"] for d in docs if component_of(d) == "postgresql"}
    assert {"Service", "StatefulSet"} <= {d["kind"] for d in docs if component_of(d) == "minio"}
    assert "WARNING" not in notes(DEV_VALUES)


def test_existing_secret_is_used_and_not_created():
    docs = render(SCENARIOS["existing-secret"])
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"] == RELEASE]
    refs = container(one(docs, "Deployment", f"{RELEASE}-api"), "api")["envFrom"]
    assert {"secretRef": {"name": "thumbnail-credentials"}} in refs


def test_notes_explain_access():
    text = notes({})
    assert "port-forward svc/thumbnail-api 8080:8080" in text
    assert "curl" in text and "/api/v1/thumbnails/" in text
    assert "WARNING: no database is configured" in text


def test_release_names():
    docs = render({}, name="prod", namespace="media")
    assert one(docs, "Deployment", "prod-thumbnail-api")["metadata"]["namespace"] == "media"
    assert one(docs, "ClusterRole", "prod-thumbnail-media-operator")


def quantity_bytes(q):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if str(q).endswith(suffix):
            return int(float(str(q)[: -len(suffix)]) * factor)
    return int(q)


def test_operator_memory_holds_its_inline_renders():
    """INLINE_CONCURRENCY renders of the largest image rendered inline (JOB_PIXEL_THRESHOLD; larger
    ones always go to a Job) fit the operator's memory limit: per render its decoded pixels and a
    resize buffer (12 B per pixel, the estimate render Jobs are sized with) and the source twice,
    plus 128 MiB for the process itself."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    op = values["operator"]
    max_upload = int(values.get("limits", {}).get("maxUploadBytes", 25 * 2**20))
    per_render = op["jobPixelThreshold"] * 12 + 2 * max_upload
    need = 128 * 2**20 + op["inlineConcurrency"] * per_render
    limit = quantity_bytes(op["resources"]["limits"]["memory"])
    assert need <= limit, f"{need / 2**20:.0f} MiB needed, limit {limit / 2**20:.0f} MiB"
    # The rendered Deployment carries the same threshold and concurrency.
    docs = render({})
    env = {e["name"]: e.get("value") for e in container(one(docs, "Deployment", f"{RELEASE}-operator"), "operator")["env"]}
    assert int(env["JOB_PIXEL_THRESHOLD"]) == op["jobPixelThreshold"]
    assert int(env["INLINE_CONCURRENCY"]) == op["inlineConcurrency"]


def test_operator_shutdown_fits_the_grace_period():
    """SIGTERM: the drain (SHUTDOWN_GRACE_SECONDS), then the hand-back of what is left (at most a
    third of the Lease duration, 15 s by default) and the Lease release fit the pod's grace period."""
    docs = render({"operator": {"shutdownGraceSeconds": 40}})
    deploy = one(docs, "Deployment", f"{RELEASE}-operator")
    env = {e["name"]: e.get("value") for e in container(deploy, "operator")["env"]}
    grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(env["SHUTDOWN_GRACE_SECONDS"]) == 40
    assert grace >= 40 + 15 / 3 + 2, grace


# --- authentication -----------------------------------------------------------------------------------

def api_env(docs):
    return {e["name"]: e for e in container(one(docs, "Deployment", f"{RELEASE}-api"), "api")["env"]}


def test_api_keys_are_the_default_with_a_generated_admin_key():
    import base64
    docs = render({})
    env = api_env(docs)
    assert env["AUTH_MODE"]["value"] == "api-key"
    ref = env["ADMIN_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{RELEASE}-admin-key", "key": "ADMIN_API_KEY"}
    secret = one(docs, "Secret", f"{RELEASE}-admin-key")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(secret["data"]["ADMIN_API_KEY"]).decode()
    assert re.fullmatch(r"thn_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}", key), key
    # A new key every install: nothing literal in the chart.
    again = base64.b64decode(one(render({}), "Secret", f"{RELEASE}-admin-key")["data"]["ADMIN_API_KEY"]).decode()
    assert again != key
    assert key not in (CHART / "values.yaml").read_text()
    text = notes({})
    assert f"get secret {RELEASE}-admin-key -o jsonpath='{{.data.ADMIN_API_KEY}}' | base64 -d" in text
    assert '-H "Authorization: Bearer $KEY" -F image=@photo.jpg' in text
    assert "/api/v1/keys" in text
    assert env["UPLOADS_PER_MINUTE"]["value"] == "600"
    assert env["MAX_STORED_BYTES_PER_OWNER"]["value"] == "10737418240"


def test_an_existing_admin_key_secret_is_used_and_none_generated():
    docs = render(SCENARIOS["existing-secret"])
    ref = api_env(docs)["ADMIN_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "thumbnail-admin", "key": "key"}
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("admin-key")]
    assert "get secret thumbnail-admin -o jsonpath='{.data.key}'" in notes(SCENARIOS["existing-secret"])


def test_dev_values_keep_the_original_contract():
    docs = render(DEV_VALUES)
    env = api_env(docs)
    assert env["AUTH_MODE"]["value"] == "none"
    assert "ADMIN_API_KEY" not in env
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("admin-key")]
    text = notes(DEV_VALUES)
    assert "auth.mode is none" in text
    assert "curl -s -F image=@photo.jpg" in text


def test_jwt_mode_passes_the_issuer_and_needs_no_key():
    docs = render(SCENARIOS["jwt"])
    env = {name: e.get("value") for name, e in api_env(docs).items()}
    assert env["AUTH_MODE"] == "jwt"
    assert env["JWT_ISSUER"] == "https://login.example.com/realms/main"
    assert env["JWT_AUDIENCE"] == "thumbnail-api"
    assert env["JWT_OWNER_CLAIM"] == "sub" and "JWT_JWKS_URL" not in env
    assert env["METRICS_AUTH"] == "true" and env["TRUSTED_PROXY_HOPS"] == "1"
    assert "ADMIN_API_KEY" not in env
    assert "https://login.example.com/realms/main" in notes(SCENARIOS["jwt"])
