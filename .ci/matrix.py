"""Run the end-to-end chain tests on every other Python of the supported
matrix, each in a fresh virtual environment, and print which ran.

The whole suite runs on the Python that runs this script (see .ci/run);
here every other version of ``lambda_debugger.lambda_side.versions.SUPPORTED_PYTHONS``
found on the machine runs the tests marked ``chain``, with the newest
debugpy, and the oldest Python also with the oldest debugpy the package
accepts. A version that is not on the machine is reported, not passed.

Exit status: 0 when every run that could start passed, 1 otherwise.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lambda_debugger.lambda_side import versions  # noqa: E402

#: Longest a single run may take before it counts as failed.
RUN_TIMEOUT_S = 900


def find_python(version):
    """An interpreter of ``version`` (3, 12) on this machine, or None."""
    name = "python%d.%d" % version
    candidates = [shutil.which(name)]
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"), "/usr/local", "/usr"]
    for root in roots:
        candidates += sorted(glob.glob(os.path.join(root, "versions", "%d.%d.*" % version, "bin", name)), reverse=True)
        candidates.append(os.path.join(root, "bin", name))
    for path in candidates:
        if path and os.access(path, os.X_OK) and _reports(path, version):
            return path
    return None


def _reports(path, version):
    try:
        out = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False  # e.g. a pyenv shim for a version pyenv does not have
    return out.returncode == 0 and out.stdout.strip() == "%d.%d" % version


def chain_test_files():
    """The test modules that hold tests marked ``chain`` (the others need
    test dependencies that only the main suite installs)."""
    pattern = os.path.join(REPO, "tests", "test_*.py")
    return sorted(
        os.path.relpath(path, REPO)
        for path in glob.glob(pattern)
        if "pytest.mark.chain" in open(path, encoding="utf-8").read()
    )


def run(python, version, venvs, debugpy=None):
    """Make a venv with ``python``, install the package, run the chain tests.
    Returns (ok, debugpy version, seconds, pytest's summary line, details)."""
    started = time.monotonic()
    venv = os.path.join(venvs, "py%d.%d%s" % (version[0], version[1], "-" + debugpy if debugpy else ""))
    venv_python = os.path.join(venv, "bin", "python")
    pip_install = [venv_python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    steps = [[python, "-m", "venv", venv], [*pip_install, REPO + "[chain-test]"]]
    if debugpy:
        steps.append([*pip_install, "debugpy==" + debugpy])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=REPO)
        if done.returncode != 0:
            return False, "-", time.monotonic() - started, "install failed", done.stdout + done.stderr
        # The package must build through its PEP 517 backend with no legacy path.
        warnings = [line for line in (done.stdout + done.stderr).splitlines() if "DEPRECATION" in line]
        if warnings:
            return False, "-", time.monotonic() - started, "pip warned", "\n".join(warnings)
    found = (
        subprocess.run(
            [venv_python, "-c", "import debugpy; print(debugpy.__version__)"], capture_output=True, text=True
        ).stdout.strip()
        or "?"
    )
    try:
        tests = subprocess.run(
            [venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "chain", *chain_test_files()],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False, found, time.monotonic() - started, "timed out after %d s" % RUN_TIMEOUT_S, ""
    lines = tests.stdout.strip().splitlines()
    summary = lines[-1] if lines else "(no output)"
    details = "" if tests.returncode == 0 else tests.stdout[-6000:] + tests.stderr[-2000:]
    return tests.returncode == 0, found, time.monotonic() - started, summary, details


def main():
    here = sys.version_info[:2]
    oldest_debugpy = ".".join(str(n) for n in versions.DEBUGPY_OLDEST)
    plan = []
    for version in versions.SUPPORTED_PYTHONS:
        if version == here:
            continue  # the whole suite runs there
        plan.append((version, None))
        if version == versions.SUPPORTED_PYTHONS[0]:
            plan.append((version, oldest_debugpy))
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="lambda-debugger-matrix-") as venvs:
        for version, debugpy in plan:
            label = "python%d.%d" % version
            python = find_python(version)
            if python is None:
                rows.append((label, "-", "NOT TESTED: not on this machine", ""))
                print("%s: not on this machine; the chain is NOT TESTED there" % label, flush=True)
                continue
            print("%s (%s), debugpy %s: chain tests ..." % (label, python, debugpy or "newest"), flush=True)
            ok, found, seconds, summary, details = run(python, version, venvs, debugpy)
            failed = failed or not ok
            rows.append((label, found, ("passed" if ok else "FAILED") + " in %.0f s" % seconds, summary))
            print(details + "  " + summary, flush=True)
    print("\nPython matrix (the whole suite ran on python%d.%d):" % here)
    print("%-12s %-9s %-34s %s" % ("python", "debugpy", "chain tests", "summary"))
    for row in rows:
        print("%-12s %-9s %-34s %s" % row)
    passed = sum(_count(row[3], "passed") for row in rows)
    failures = sum(_count(row[3], "failed") + _count(row[3], "error") for row in rows)
    print("matrix: %d passed, %d failed" % (passed, failures + (1 if failed and not failures else 0)))
    return 1 if failed else 0


def _count(summary, word):
    """The number before ``word`` in a pytest summary line, or 0."""
    found = re.search(r"(\d+) %s" % word, summary)
    return int(found.group(1)) if found else 0


if __name__ == "__main__":
    sys.exit(main())
