"""The test count of scripts/test.sh (scripts/lib/count_tests.py), checked on what the real cargo
and pytest print for crashes, compile errors, nested result lines and errors: a throwaway crate
and a throwaway test directory are run here, and their logs counted."""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "lib"))
import count_tests  # noqa: E402

NESTED = "test result: ok. 99 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def cargo(root, *args):
    """Run cargo in `root` (no dependencies, so no network), return (exit status, log)."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(root / "target"), CARGO_TERM_COLOR="never")
    env.pop("RUSTFLAGS", None)
    out = subprocess.run(["cargo", *args], cwd=root, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600)
    return out.returncode, out.stdout


MANIFEST = """\
    [package]
    name = "{name}"
    version = "0.0.0"
    edition = "2021"
    [workspace]
"""


@pytest.fixture(scope="module")
def crate(tmp_path_factory):
    root = tmp_path_factory.mktemp("counted")
    write(root, {
        "Cargo.toml": MANIFEST.format(name="counted"),
        "src/lib.rs": f'''
            /// ```
            /// assert_eq!(counted::one(), 1);
            /// ```
            ///
            /// ```
            /// assert_eq!(counted::one(), 2);
            /// ```
            pub fn one() -> u32 {{ 1 }}

            #[cfg(test)]
            mod tests {{
                #[test]
                fn passes() {{ assert_eq!(super::one(), 1); }}

                #[test]
                fn fails_with_another_runs_result_line() {{
                    println!("output of a run this test started:");
                    println!("{NESTED}");
                    panic!("failed on purpose");
                }}
            }}
        ''',
        "tests/crash.rs": '''
            #[test]
            fn a_passes() {}

            #[test]
            fn b_aborts() { std::process::abort(); }
        ''',
        "tests/exits.rs": '''
            #[test]
            fn exits_early_with_success() { std::process::exit(0); }
        ''',
    })
    status, log = cargo(root, "test", "--no-fail-fast", "--all-targets", "--", "--test-threads=1")
    doc_status, doc_log = cargo(root, "test", "--doc")
    return status, log, doc_status, doc_log


def test_crashed_binaries_and_nested_result_lines(crate):
    status, log, _, _ = crate
    assert status != 0
    assert NESTED in log
    count = count_tests.count_cargo(log, status)
    # lib: 1 passed, 1 failed (its nested result line is not counted);
    # crash: a_passes passed, b_aborts failed; exits: its one test failed (no result line).
    assert (count.passed, count.failed) == (2, 3), (count, log)


def test_doctests_are_counted(crate):
    _, _, status, log = crate
    assert "Doc-tests counted" in log
    count = count_tests.count_cargo(log, status)
    assert (count.passed, count.failed) == (1, 1), (count, log)


def test_a_target_that_does_not_compile_counts(tmp_path):
    write(tmp_path, {
        "Cargo.toml": MANIFEST.format(name="broken"),
        "src/lib.rs": "pub fn fine() {}\n",
        "tests/broken.rs": "#[test]\nfn t() { let x: u32 = \"not a number\"; }\n",
    })
    status, log = cargo(tmp_path, "test", "--no-fail-fast", "--all-targets")
    assert status != 0 and "could not compile" in log, log
    count = count_tests.count_cargo(log, status)
    assert count.failed >= 1, (count, log)


def pytest_log(root):
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(root)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return out.returncode, out.stdout


def test_pytest_errors_count(tmp_path):
    write(tmp_path, {"test_mixed.py": '''
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture broke")

        def test_passes():
            pass

        def test_fails():
            assert False

        def test_errors(broken):
            pass

        @pytest.mark.skip(reason="not counted either way")
        def test_skipped():
            pass
    '''})
    status, log = pytest_log(tmp_path)
    count = count_tests.count_pytest(log, status)
    assert (count.passed, count.failed) == (1, 2), (count, log)


def test_pytest_collection_errors_count(tmp_path):
    write(tmp_path, {"test_broken.py": "import no_such_module_here\n\ndef test_x():\n    pass\n"})
    status, log = pytest_log(tmp_path)
    count = count_tests.count_pytest(log, status)
    assert status != 0
    assert (count.passed, count.failed) == (0, 1), (count, log)


def test_a_silent_failure_counts():
    assert count_tests.count_pytest("Traceback: conftest exploded\n", 4).failed == 1
    assert count_tests.count_cargo("error: something went wrong before any test\n", 101).failed == 1
    assert count_tests.count_cargo("", 0).failed == 0


def test_manifest_total(tmp_path, capsys):
    (tmp_path / "cargo.log").write_text(
        "     Running unittests src/lib.rs (target/debug/deps/x-1)\n\nrunning 2 tests\n"
        "test a ... ok\ntest b ... ok\n\n"
        "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n")
    (tmp_path / "pytest.log").write_text("3 passed, 1 failed in 0.10s\n")
    (tmp_path / "manifest").write_text(f"cargo 0 {tmp_path}/cargo.log\npytest 1 {tmp_path}/pytest.log\n")
    count_tests.main(str(tmp_path / "manifest"))
    assert capsys.readouterr().out.splitlines()[-1] == "tests: 5 passed, 1 failed"
