"""Shared helpers for the chart tests (run by scripts/test-chart.sh)."""

import collections

# (kubernetes version) -> number of manifests validated, reported at the end of the run.
VALIDATED = collections.Counter()


def pytest_terminal_summary(terminalreporter):
    if VALIDATED:
        terminalreporter.write_sep("-", "kubernetes-validate --strict")
        for version, count in sorted(VALIDATED.items()):
            terminalreporter.write_line(f"Kubernetes {version}: {count} manifests valid")
