#!/usr/bin/env python3
"""Count the tests that passed and failed in the logs of scripts/test.sh's steps.

    count_tests.py MANIFEST

MANIFEST has one line per counted step: `KIND EXIT_STATUS LOG` (KIND: cargo or pytest). The
breakdown goes to stderr; the last line on stdout is `tests: N passed, M failed`.

What counts as failed, beyond the runners' own "failed" figures:
- cargo: a test binary that never printed its result line (it crashed, was killed, or exited from
  inside a test) counts the tests it did not report as passed, at least one; a binary that printed
  a clean result but then died by a signal counts one; every target that did not compile counts
  one. A result line inside another test's captured output (a test that runs cargo or a test
  binary itself) is not a result of this run and is not counted.
- pytest: errors (in fixtures or at collection) count as failed; a run that exited non-zero
  without its closing line counts one.
"""

import re
import sys
from dataclasses import dataclass, field

RUNNING = re.compile(r"^\s+Running (?:.* \()?(?P<path>[^ ()]+)\)?\s*$")
DOC_TESTS = re.compile(r"^\s+Doc-tests (?P<name>\S+)\s*$")
RUNNING_N = re.compile(r"^running (?P<n>\d+) tests?$")
RESULT = re.compile(
    r"^test result: (?:ok|FAILED)\. (?P<passed>\d+) passed; (?P<failed>\d+) failed; (?P<ignored>\d+) ignored"
)
TEST_OK = re.compile(r"^test \S.* \.\.\. ok$")
COULD_NOT_COMPILE = re.compile(r"^error: could not compile `(?P<crate>[^`]+)`(?: \((?P<target>[^)]*)\))?")
DIED = re.compile(r"process didn't exit successfully: `(?P<cmd>[^`]*)` \((?P<why>signal: [^)]*)\)")


@dataclass
class Count:
    passed: int = 0
    failed: int = 0
    notes: list = field(default_factory=list)

    def add(self, other):
        self.passed += other.passed
        self.failed += other.failed
        self.notes += other.notes


@dataclass
class Binary:
    name: str
    expected: int | None = None
    result: tuple | None = None
    ok_lines: int = 0
    # Inside the captured output of failed tests (between the first "failures:" and the list
    # of failed names): result lines there belong to runs started by a test, not to this one.
    in_captured: bool = False
    seen_failures: int = 0


def count_cargo(text, status=0):
    count = Count()
    binaries = []
    current = None
    died = []
    for line in text.splitlines():
        m = RUNNING.match(line) or DOC_TESTS.match(line)
        if m:
            current = Binary(m.groupdict().get("path") or "doc-tests " + m.group("name"))
            binaries.append(current)
            continue
        m = COULD_NOT_COMPILE.match(line)
        if m:
            target = m.group("target") or "lib"
            count.failed += 1
            count.notes.append(f"did not compile: {m.group('crate')} ({target})")
            continue
        m = DIED.search(line)
        if m:
            died.append((m.group("cmd").split()[0], m.group("why")))
            continue
        if current is None:
            continue
        if line == "failures:":
            current.seen_failures += 1
            current.in_captured = current.seen_failures == 1
            continue
        if current.in_captured:
            continue
        m = RUNNING_N.match(line)
        if m and current.expected is None:
            current.expected = int(m.group("n"))
            continue
        if TEST_OK.match(line):
            current.ok_lines += 1
            continue
        m = RESULT.match(line)
        if m:
            current.result = (int(m.group("passed")), int(m.group("failed")))
    for binary in binaries:
        killed = [why for path, why in died if binary.name.endswith(path.rsplit("/", 1)[-1])]
        if binary.result is None:
            missing = max(1, (binary.expected or 0) - binary.ok_lines)
            count.passed += binary.ok_lines
            count.failed += missing
            count.notes.append(f"no result line from {binary.name} ({', '.join(killed) or 'crashed'}): {missing} failed")
            continue
        passed, failed = binary.result
        count.passed += passed
        count.failed += failed
        if killed and failed == 0:
            count.failed += 1
            count.notes.append(f"{binary.name} died after its tests ({', '.join(killed)})")
    if status != 0 and count.failed == 0:
        count.failed += 1
        count.notes.append(f"cargo exited with status {status} but no test failed")
    return count


PYTEST_SUMMARY = re.compile(r"^=*\s*(?P<items>(?:\d+ [a-z]+(?:, )?)+|no tests ran) in [0-9.]+s(?: \([^)]*\))?\s*=*$")


def count_pytest(text, status=0):
    count = Count()
    summary = None
    for line in text.splitlines():
        m = PYTEST_SUMMARY.match(line.strip())
        if m:
            summary = m.group("items")
    if summary is None:
        if status != 0:
            count.failed += 1
            count.notes.append(f"pytest exited with status {status} without its closing line")
        return count
    for number, word in re.findall(r"(\d+) ([a-z]+)", summary):
        if word == "passed":
            count.passed += int(number)
        elif word in ("failed", "error", "errors", "xpassed"):
            count.failed += int(number)
    if status not in (0, 5) and count.failed == 0:
        count.failed += 1
        count.notes.append(f"pytest exited with status {status} but reported no failure")
    return count


COUNTERS = {"cargo": count_cargo, "pytest": count_pytest}


def main(manifest):
    total = Count()
    with open(manifest) as f:
        entries = [line.strip().split(maxsplit=2) for line in f if line.strip()]
    for kind, status, log in entries:
        try:
            text = open(log, errors="replace").read()
        except OSError as e:
            text = ""
            print(f"    {log}: {e}", file=sys.stderr)
        count = COUNTERS[kind](text, int(status))
        print(f"    {kind:6} {log}: {count.passed} passed, {count.failed} failed", file=sys.stderr)
        for note in count.notes:
            print(f"        {note}", file=sys.stderr)
        total.add(count)
    print(f"tests: {total.passed} passed, {total.failed} failed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
