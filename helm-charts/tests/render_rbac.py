"""Print the chart's identities and permissions (ServiceAccounts, Roles, ClusterRoles and their
bindings), rendered with the real Helm engine, as a YAML stream for `kubectl apply -f -`.

The operator's tests run the operator and the API with tokens of exactly these ServiceAccounts on a
real API server (operator/tests/common/cluster.rs), so a verb missing from the chart's RBAC (built
from crds/src/rbac.rs) fails a test.

    python3 helm-charts/tests/render_rbac.py --release R --namespace NS [--values JSON]
"""

import argparse
import json
import pathlib
import sys

import yaml
from helm_python import Chart

KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
CHART = pathlib.Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--values", default="{}", help="chart values, as JSON")
    args = parser.parse_args()
    out = Chart.load(str(CHART)).render(json.loads(args.values), name=args.release, namespace=args.namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") in KINDS:
                # Namespaced objects without a namespace go to the release's, as `helm install -n` does.
                if doc["kind"] in {"ServiceAccount", "Role", "RoleBinding"}:
                    doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
                docs.append(doc)
    if not docs:
        sys.exit("the chart rendered no RBAC objects")
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
