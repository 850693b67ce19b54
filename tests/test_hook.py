"""The import swap, in fresh interpreters so that sys.modules tells the truth."""

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from lambda_debugger.lambda_side import hook
from tests.support.chain import REPO

pytestmark = pytest.mark.timeout(60)

HEAVY = (
    "debugpy",
    "websocket",
    "tornado",
    "multiprocessing",
    "lambda_debugger.lambda_side.proxy",
    "lambda_debugger.lambda_side.config",
    "lambda_debugger.lambda_side.hook",
    "awslambdaric",
)

PROBE = textwrap.dedent(
    """
    import json, sys
    import app
    original = app.ORIGINAL
    print(json.dumps({
        "same_object": app.handler is original,
        "wrapped": getattr(app.handler, "__wrapped__", None) is original,
        "heavy": sorted(m for m in %r if m in sys.modules),
        "result": app.handler({"x": 1}, None) if app.handler is original else None,
    }))
"""
    % (HEAVY,)
)

MODULE = textwrap.dedent("""
    def handler(event, context):
        return {"got": event}
    ORIGINAL = handler
    import lambda_debugger
""")


def test_the_heavy_modules_checked_are_real_module_paths():
    # A renamed module would make the checks below pass for nothing.
    import importlib.util

    for name in HEAVY:
        assert importlib.util.find_spec(name) is not None, name


def probe(tmp_path, env, module=MODULE):
    (tmp_path / "app.py").write_text(module)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEBUGGER_", "_HANDLER"))}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(clean, PYTHONPATH=REPO, **env),
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout), completed.stderr


@pytest.mark.parametrize("active", [None, "", "false", "FALSE", "0", " 0 "])
def test_inactive_import_leaves_the_handler_and_loads_nothing(tmp_path, active):
    env = {"_HANDLER": "app.handler"}
    if active is not None:
        env["DEBUGGER_ACTIVE"] = active
    report, stderr = probe(tmp_path, env)
    assert report == {"same_object": True, "wrapped": False, "heavy": [], "result": {"got": {"x": 1}}}
    assert stderr == ""


def test_active_import_swaps_the_handler_without_loading_debugpy(tmp_path):
    report, stderr = probe(
        tmp_path,
        {
            "_HANDLER": "app.handler",
            "DEBUGGER_ACTIVE": "true",
            "DEBUGGER_BROKER_ADDRESS": "127.0.0.1:9",
            "DEBUGGER_FUNCTION_ID": "fn",
        },
    )
    assert report["wrapped"] and not report["same_object"]
    assert "debugpy" not in report["heavy"] and "websocket" not in report["heavy"]
    assert "tornado" not in report["heavy"]


def test_active_without_handler_variable_does_nothing(tmp_path):
    report, stderr = probe(
        tmp_path, {"DEBUGGER_ACTIVE": "1", "DEBUGGER_BROKER_ADDRESS": "b", "DEBUGGER_FUNCTION_ID": "fn"}
    )
    assert report["same_object"] and report["result"] == {"got": {"x": 1}}
    assert stderr == ""


def test_invalid_settings_log_one_line_and_keep_the_handler(tmp_path):
    report, stderr = probe(
        tmp_path,
        {
            "_HANDLER": "app.handler",
            "DEBUGGER_ACTIVE": "1",
            "DEBUGGER_BROKER_ADDRESS": "b",
            "DEBUGGER_FUNCTION_ID": "bad id",
        },
    )
    assert report["same_object"]
    assert [line for line in stderr.splitlines() if line] == [
        "lambda_debugger: DEBUGGER_FUNCTION_ID must match [A-Za-z0-9._-]{1,128} "
        "(1-128 letters, digits, '.', '_' or '-'); the function runs without the debugger"
    ]


def test_import_before_the_handler_says_where_it_belongs(tmp_path):
    module = "import lambda_debugger\ndef handler(event, context):\n    return event\nORIGINAL = handler\n"
    report, stderr = probe(
        tmp_path,
        {
            "_HANDLER": "app.handler",
            "DEBUGGER_ACTIVE": "1",
            "DEBUGGER_BROKER_ADDRESS": "b",
            "DEBUGGER_FUNCTION_ID": "fn",
        },
        module,
    )
    assert report["same_object"]
    assert "app.handler is not defined yet; move `import lambda_debugger` to the end of app.py" in stderr


# Unit tests of hook.install with fake modules ---------------------------------

ENV = {"DEBUGGER_ACTIVE": "1", "DEBUGGER_BROKER_ADDRESS": "b", "DEBUGGER_FUNCTION_ID": "fn"}


def fake_module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def test_nested_handler_paths_are_resolved():
    def handler(event, context):
        return event

    module = fake_module("src.app", handler=handler)
    assert hook.install(dict(ENV, _HANDLER="src/app.handler"), {"src.app": module})
    assert module.handler.__wrapped__ is handler and module.handler.__name__ == "handler"
    # a second install (module reloaded) does not wrap twice
    assert hook.install(dict(ENV, _HANDLER="src/app.handler"), {"src.app": module})
    assert module.handler.__wrapped__ is handler


@pytest.mark.parametrize(
    "handler_name, modules, message",
    [
        ("nodot", {}, "cannot read _HANDLER"),
        ("other.handler", {}, "imported before the handler module 'other'"),
        ("app.handler", {"app": fake_module("app", handler=42)}, "is not callable"),
    ],
)
def test_problems_are_one_warning_and_no_swap(caplog, handler_name, modules, message):
    assert not hook.install(dict(ENV, _HANDLER=handler_name), modules)
    warnings = [r.getMessage() for r in caplog.records if r.name == "lambda_debugger"]
    assert len(warnings) == 1 and message in warnings[0]


def test_zero_code_mode_is_left_to_its_own_module(caplog):
    # The package's import runs before lambda_debugger.zero_code exists: no
    # warning, no swap; zero_code wraps the function's handler itself.
    assert not hook.install(dict(ENV, _HANDLER=hook.ZERO_CODE_HANDLER), {})
    assert [r for r in caplog.records if r.name == "lambda_debugger"] == []


def test_a_handler_wrapped_by_both_modes_is_wrapped_once():
    def handler(event, context):
        return event

    module = fake_module("app", handler=handler)
    assert hook.install(dict(ENV, _HANDLER="app.handler"), {"app": module})
    proxy = module.handler
    assert hook.wrap(proxy, "app.handler", ENV) is proxy
    assert hook.wrap(handler, "app.handler", dict(ENV, DEBUGGER_WAIT_MAX="soon")) is None
