"""The layer zip and the zero-code mode, built for this machine's
architecture and Python and run by the real runtime client from the
unpacked layer (as Lambda mounts it at /opt)."""

import configparser
import json
import os
import platform
import subprocess
import sys
import zipfile

import pytest

from lambda_debugger.developer import layer
from tests.support.chain import REPO, break_line

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
PYTHON = "%d.%d" % sys.version_info[:2]

#: A handler module without `import lambda_debugger`: zero-code mode only.
SOURCE = """\
import os
import sys


def handler(event, context):
    items = event["items"]  # BREAK
    total = sum(item["price"] for item in items)
    return {
        "total": total,
        "handler_variable": os.environ.get("_HANDLER"),
        "package_loaded": "lambda_debugger" in sys.modules,
    }
"""

EVENT = {"items": [{"price": 1}, {"price": 2}, {"price": 3}]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(zip path, command output, unpacked folder) of a layer built by the CLI."""
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "lambda_debugger", "layer", "--arch", ARCH, "--python", PYTHON, "-o", str(out)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    path = out / layer.layer_file_name(PYTHON, ARCH)
    unpacked = tmp_path_factory.mktemp("opt")
    with zipfile.ZipFile(path) as archive:
        archive.extractall(unpacked)
        for info in archive.infolist():  # extractall drops the modes
            os.chmod(unpacked / info.filename, (info.external_attr >> 16) & 0o777)
    return path, run.stdout, unpacked


def test_the_layer_is_laid_out_as_lambda_expects_and_small(built):
    path, output, _ = built
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        wrapper = archive.getinfo(layer.WRAPPER_NAME)
    assert path.stat().st_size <= 10 * 1024 * 1024
    assert (wrapper.external_attr >> 16) & 0o111  # executable once mounted
    top = {name.split("/")[0] for name in names}
    assert top == {"python", layer.WRAPPER_NAME}
    packages = {name.split("/")[1] for name in names if name.startswith("python/")}
    assert {"lambda_debugger", "debugpy", "websocket", "jmespath"} <= packages
    assert not packages & {"tornado", "broker_server", "tests", "awslambdaric", "bin"}
    assert not [
        n
        for n in names
        if n.startswith(("python/lambda_debugger/local/", "python/lambda_debugger/developer/")) or n.endswith(".pyc")
    ]  # only what runs in Lambda
    assert {
        "python/lambda_debugger/zero_code.py",
        "python/lambda_debugger/lambda_side/proxy.py",
        "python/lambda_debugger/wire/relay.py",
    } <= set(names)
    # The command says where the zip is, how big, and what went in.
    assert "built %s: " % path in output and "MiB zipped" in output
    assert "python/debugpy" in output and "wheel: debugpy " in output
    assert "AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-debugger-wrapper" in output


def test_the_layer_is_reproducible(built, tmp_path):
    path, _, _ = built
    again = layer.build_layer(ARCH, PYTHON, str(tmp_path), log=lambda line: None)
    assert open(again.path, "rb").read() == path.read_bytes()


def test_the_package_imports_from_the_layer_alone(built):
    _, _, unpacked = built
    site = str(unpacked / "python")
    probe = (
        "import sys; sys.path.insert(0, %r)\n"
        "import lambda_debugger, debugpy, websocket, jmespath\n"
        "import lambda_debugger.lambda_side.proxy, lambda_debugger.lambda_side.child\n"
        "for m in (lambda_debugger, debugpy, websocket, jmespath): assert m.__file__.startswith(%r), m.__file__\n"
        "try:\n    import tornado\nexcept ImportError:\n    print('no tornado')\n"
    ) % (site, site)
    # -I -S: no PYTHONPATH, no user or system site-packages; only the layer.
    run = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "no tornado"


def test_layer_requirements_match_setup_cfg():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    required = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    assert sorted(required) == sorted(layer.LAMBDA_REQUIREMENTS)


@pytest.mark.parametrize(
    "arch, python, message",
    [
        ("sparc", "3.12", "--arch must be one of"),
        ("x86_64", "3.8", "--python must be one of"),
    ],
)
def test_bad_layer_arguments_are_refused(arch, python, message, tmp_path):
    with pytest.raises(layer.LayerError, match=message):
        layer.build_layer(arch, python, str(tmp_path), log=lambda line: None)


# Zero-code mode -------------------------------------------------------------


def zero_code_env(unpacked, **more):
    return dict(
        {"AWS_LAMBDA_EXEC_WRAPPER": str(unpacked / layer.WRAPPER_NAME), "PYTHONPATH": str(unpacked / "python")}, **more
    )


def test_zero_code_mode_debugs_the_unchanged_handler(built, broker, start_bridge, make_function):
    _, _, unpacked = built
    plain = make_function(source=SOURCE, folder="plain")
    expected = plain.invoke(EVENT)
    assert expected.ok and json.loads(expected.payload)["package_loaded"] is False
    function = make_function(broker=broker, source=SOURCE, env=zero_code_env(unpacked))
    future = function.invoke_async(EVENT)
    bridge = start_bridge()
    client = bridge.connect()
    line = break_line(function.path)
    breakpoints = client.attach_and_configure({function.path: [line]}, timeout=30)
    assert breakpoints[function.path][0]["verified"]
    stopped = client.wait_stopped(timeout=30)
    frame = client.stack_trace(stopped["threadId"])[0]
    assert (frame["source"]["path"], frame["line"]) == (function.path, line)  # the user's own module
    assert client.evaluate("os.environ['_HANDLER']", frame["id"]) == "'app.handler'"
    client.continue_(stopped["threadId"])
    result = future.result(timeout=30)
    assert result.ok
    payload = json.loads(result.payload)
    assert payload["total"] == 6 and payload["handler_variable"] == "app.handler"
    logs = function.logs()
    assert "lambda_debugger: app.handler will wait up to 30000 ms" in logs
    assert "debugger attached; running the handler under debugpy" in logs


def test_zero_code_mode_changes_nothing_while_inactive(built, make_function):
    _, _, unpacked = built
    plain = make_function(source=SOURCE, folder="plain")
    expected = plain.invoke(EVENT)
    function = make_function(source=SOURCE, env=zero_code_env(unpacked, DEBUGGER_ACTIVE="0"))
    result = function.invoke(EVENT)
    assert result.ok and result.payload == expected.payload  # package not even imported


@pytest.mark.parametrize(
    "handler, source, error_type",
    [
        ("app.missing", SOURCE, "Runtime.HandlerNotFound"),
        ("app.handler", "import a_module_nobody_installed\n", "Runtime.ImportModuleError"),
        ("app.handler", "def handler(:\n", "Runtime.UserCodeSyntaxError"),
    ],
)
def test_zero_code_mode_reports_init_errors_as_the_runtime_does(built, make_function, handler, source, error_type):
    _, _, unpacked = built
    plain = make_function(handler, source=source, folder="plain")
    expected = plain.invoke(EVENT)
    function = make_function(handler, source=source, env=zero_code_env(unpacked, DEBUGGER_ACTIVE="1"))
    result = function.invoke(EVENT)
    assert (expected.ok, expected.error_type) == (False, error_type)
    # Identical but for the folder each copy of the function lives in.
    assert result.error_type == expected.error_type
    assert result.payload.replace(function.task_root.encode(), b"ROOT") == expected.payload.replace(
        plain.task_root.encode(), b"ROOT"
    )
