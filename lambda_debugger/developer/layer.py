"""``lambda-debugger layer``: build a Lambda layer zip of the Lambda side.

The zip holds ``python/`` (this package without its local mode, plus
manylinux wheels of debugpy, websocket-client and jmespath for the chosen Python and
architecture, fetched by pip's ``--platform`` route, no Docker) and the exec
wrapper ``lambda-debugger-wrapper`` at its root, which Lambda mounts as
``/opt/lambda-debugger-wrapper``.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import List, Tuple

from lambda_debugger.lambda_side import versions

#: The Lambda side's dependencies, as in setup.cfg's install_requires.
LAMBDA_REQUIREMENTS = (versions.DEBUGPY_REQUIREMENT, "websocket-client>=1.6", "jmespath>=1.0")

ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}  # Lambda's name -> wheel platform
PYTHON_VERSIONS = tuple("%d.%d" % version for version in versions.SUPPORTED_PYTHONS)

#: Newest glibc of each runtime family: Amazon Linux 2 for Python 3.10 and
#: 3.11, Amazon Linux 2023 from Python 3.12.
GLIBC = {"3.10": (2, 26), "3.11": (2, 26), "3.12": (2, 34), "3.13": (2, 34), "3.14": (2, 34)}

WRAPPER_NAME = "lambda-debugger-wrapper"

#: Parts of the package that never run in Lambda: the laptop's commands and
#: local mode (which needs tornado). The layer carries the rest.
LEFT_OUT = ("developer", "local", "__pycache__")

#: The package's own folder, and the zero-code exec wrapper in it.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRAPPER_SOURCE = os.path.join(PACKAGE_DIR, "lambda_side", "wrapper.sh")

#: What AWS allows for all layers and the function together, unzipped.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

#: Fixed time stamp of the zip's entries, so that a build is reproducible.
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class LayerError(Exception):
    """The layer cannot be built; the message says why."""


@dataclass
class LayerReport:
    """What :func:`build_layer` made."""

    path: str
    zipped_bytes: int
    unzipped_bytes: int
    #: (top-level name in python/, unzipped bytes), largest first.
    parts: List[Tuple[str, int]] = field(default_factory=list)
    #: (distribution, version, wheel tag) of each dependency installed.
    wheels: List[Tuple[str, str, str]] = field(default_factory=list)


def layer_file_name(python: str, arch: str) -> str:
    return "lambda-debugger-layer-python%s-%s.zip" % (python, arch)


def build_layer(arch: str, python: str, out_dir: str, *, pip_args=(), log=print) -> LayerReport:
    """Build the layer zip for ``arch`` and ``python`` in ``out_dir``.

    Raises:
        LayerError: bad architecture or version, pip failed (offline, no
            wheel for that platform), or the output folder is not writable.
    """
    if arch not in ARCHITECTURES:
        raise LayerError("--arch must be one of %s, not %r" % (", ".join(ARCHITECTURES), arch))
    if python not in PYTHON_VERSIONS:
        raise LayerError(
            "--python must be one of %s (Lambda's Python runtimes), not %r" % (", ".join(PYTHON_VERSIONS), python)
        )
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise LayerError("cannot create %s: %s" % (out_dir, exc.strerror)) from None
    with tempfile.TemporaryDirectory(prefix="lambda-debugger-layer-") as root:
        site = os.path.join(root, "python")
        log("fetching %s for Python %s on %s (manylinux wheels) ..." % (", ".join(LAMBDA_REQUIREMENTS), python, arch))
        _pip_install(site, arch, python, pip_args)
        _copy_package(os.path.join(site, "lambda_debugger"))
        wrapper = os.path.join(root, WRAPPER_NAME)
        shutil.copyfile(WRAPPER_SOURCE, wrapper)
        os.chmod(wrapper, 0o755)
        path = os.path.join(out_dir, layer_file_name(python, arch))
        unzipped = _zip(root, path)
        parts = sorted(
            ((name, _size(os.path.join(site, name))) for name in os.listdir(site) if not name.endswith(".dist-info")),
            key=lambda part: -part[1],
        )
        wheels = _wheels(site)
    return LayerReport(path, os.path.getsize(path), unzipped, parts, wheels)


def _wheels(site: str) -> List[Tuple[str, str, str]]:
    found = []
    for name in sorted(os.listdir(site)):
        if name.endswith(".dist-info"):
            distribution, _, version = name[: -len(".dist-info")].rpartition("-")
            try:
                with open(os.path.join(site, name, "WHEEL"), encoding="utf-8") as wheel:
                    tags = [line.split(":", 1)[1].strip() for line in wheel if line.startswith("Tag:")]
            except OSError:
                tags = []
            found.append((distribution, version, tags[-1] if tags else "?"))
    return found


def _pip_install(site: str, arch: str, python: str, pip_args) -> None:
    machine = ARCHITECTURES[arch]
    major, minor = GLIBC[python]
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        site,
        "--only-binary=:all:",
        "--no-compile",
        "--implementation",
        "cp",
        "--python-version",
        python,
        # pip also accepts every older manylinux tag of these.
        "--platform",
        "manylinux_%d_%d_%s" % (major, minor, machine),
        "--platform",
        "manylinux2014_%s" % machine,
        "--disable-pip-version-check",
        "--quiet",
        *pip_args,
        *LAMBDA_REQUIREMENTS,
    ]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-6:])
        raise LayerError(
            "pip could not fetch the wheels for Python %s on %s (is PyPI or your index "
            "reachable?):\n%s" % (python, arch, tail)
        )
    for name in os.listdir(site):
        if name == "bin" or name.endswith(".dist-info") and not name.startswith(("debugpy", "websocket", "jmespath")):
            shutil.rmtree(os.path.join(site, name), ignore_errors=True)


def _copy_package(target: str) -> None:
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns(*LEFT_OUT, "*.pyc"))
    for name in LEFT_OUT:
        if os.path.exists(os.path.join(target, name)):
            raise LayerError("the layer must not contain lambda_debugger/%s" % name)


def _zip(root: str, path: str) -> int:
    """Zip ``root`` into ``path`` deterministically; return the unzipped size."""
    total = 0
    with zipfile.ZipFile(path + ".partial", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                info = zipfile.ZipInfo(os.path.relpath(full, root), ZIP_TIME)
                mode = os.stat(full).st_mode
                executable = mode & stat.S_IXUSR
                info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as data:
                    content = data.read()
                total += len(content)
                archive.writestr(info, content, compresslevel=9)
    os.replace(path + ".partial", path)
    return total


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, files in os.walk(path) for name in files)


def describe(report: LayerReport) -> str:
    """Lines for the terminal: where the zip is, its size, what is in it."""
    mib = lambda n: "%.1f MiB" % (n / 1048576.0)  # noqa: E731
    lines = [
        "built %s: %s zipped, %s unzipped (Lambda allows %s unzipped for the function and all its layers)"
        % (report.path, mib(report.zipped_bytes), mib(report.unzipped_bytes), mib(LAMBDA_UNZIPPED_LIMIT)),
        "contents:",
        "  %-40s %s" % (WRAPPER_NAME, "exec wrapper: AWS_LAMBDA_EXEC_WRAPPER=/opt/" + WRAPPER_NAME),
    ]
    for name, size in report.parts:
        lines.append("  %-40s %s" % ("python/" + name, mib(size)))
    for distribution, version, tag in report.wheels:
        note = "pure Python" if tag.endswith("-none-any") else "compiled for this runtime"
        if distribution == "debugpy" and tag.endswith("-none-any"):
            note += " (debugpy publishes no compiled wheel for it; debugging runs without its speed-ups)"
        lines.append("wheel: %s %s, %s: %s" % (distribution, version, tag, note))
    return "\n".join(lines)
