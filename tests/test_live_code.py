"""Live code push and restart, end to end: the real runtime client, broker,
bridge (``attach --push``) and debugpy.

The developer's local edits run in the debugged invocation only, under
their deployed file names, so breakpoints bind in them; the IDE's
``restart`` runs the invocation again from the top with the files as they
are now. Every other invocation runs the deployed code.
"""

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.chain import break_line, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.chain]

HELPERS = """\
def greet(name):
    return "hello %s" % name
"""

DEPLOYED = """\
from helpers import greet


def handler(event, context):
    return {"message": greet(event.get("name", "world"))}


import lambda_debugger  # noqa: E402,F401
"""

#: The edit: a new line where the deployed file has a blank one.
EDITED = """\
from helpers import greet


def handler(event, context):
    shout = greet(event.get("name", "world")).upper()
    return {"message": shout, "run": "edited"}  # BREAK


import lambda_debugger  # noqa: E402,F401
"""


class Workspace:
    """A deployed function (task root) and the developer's copy of it (the
    pushed directory), a bridge with ``--push`` and an IDE attached with
    VS Code's path mapping between the two."""

    def __init__(self, tmp_path, make_function, start_bridge, broker, *, env=None, timeout_s=60.0, bridge_args=()):
        self.broker = broker
        self.function = make_function(broker=broker, source=DEPLOYED, env=env, timeout_s=timeout_s)
        self.root = self.function.task_root
        with open(os.path.join(self.root, "helpers.py"), "w") as f:
            f.write(HELPERS)
        self.local = str(tmp_path / "laptop")
        os.makedirs(self.local)
        self.edit("app.py", DEPLOYED)
        self.edit("helpers.py", HELPERS)
        self.bridge = start_bridge(extra_args=("--push", self.local) + tuple(bridge_args))
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.client = None

    def path(self, name):
        return os.path.join(self.local, name)

    def edit(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)

    def attach(self, breakpoints):
        """An IDE armed on the bridge: configured in the background, since
        the bridge pairs only when an invocation comes."""
        self.client = self.bridge.connect(timeout=60)
        return self.pool.submit(
            self.client.attach_and_configure,
            {self.path(name): lines for name, lines in breakpoints.items()},
            path_mappings=[{"localRoot": self.local, "remoteRoot": self.root}],
            timeout=60,
        )

    def stopped_frame(self):
        stopped = self.client.wait_stopped(timeout=30)
        return stopped["threadId"], self.client.stack_trace(stopped["threadId"])[0]

    def output(self):
        return "".join(
            e["body"].get("output", "") for e in self.client.events if e.get("event") == "output" and e.get("body")
        )

    def close(self):
        if self.client is not None:
            self.client.close()
        self.pool.shutdown(wait=False)


@pytest.fixture
def workspace(tmp_path, make_function, start_bridge, broker):
    made = []

    def make(**kwargs):
        made.append(Workspace(tmp_path, make_function, start_bridge, broker, **kwargs))
        return made[-1]

    yield make
    for ws in made:
        ws.close()


def payload(result):
    assert result.ok, result.payload
    return json.loads(result.payload)


def test_a_local_edit_runs_in_the_debugged_invocation_only(workspace):
    ws = workspace(env={"DEBUGGER_WAIT_MAX": "0"}, bridge_args=("--when", "name == 'ann'"))
    assert payload(ws.function.invoke({"name": "bob"})) == {"message": "hello bob"}
    ws.edit("app.py", EDITED)
    line = break_line(ws.path("app.py"))
    configured = ws.attach({"app.py": [line]})
    ws.broker.wait_for_state("armed")
    # Bob's invocation, while the debugger is armed: the deployed code.
    assert payload(ws.function.invoke({"name": "bob"})) == {"message": "hello bob"}
    debugged = ws.function.invoke_async({"name": "ann"})
    bound = configured.result(timeout=60)[ws.path("app.py")]
    assert bound[0]["verified"] and bound[0]["line"] == line  # a blank line in the deployed file
    thread_id, frame = ws.stopped_frame()
    assert (frame["source"]["path"], frame["line"]) == (ws.path("app.py"), line)
    assert ws.client.evaluate("shout", frame["id"]) == "'HELLO ANN'"
    ws.client.continue_(thread_id)
    assert payload(debugged.result(timeout=60)) == {"message": "HELLO ANN", "run": "edited"}
    # The container itself still runs the deployed code.
    assert payload(ws.function.invoke({"name": "bob"})) == {"message": "hello bob"}
    digest = re.escape("sha256 ")
    assert re.search(r"pushed app\.py \(%s[0-9a-f]{12}\): applied" % digest, ws.function.logs())
    wait_until(lambda: "pushed app.py" in ws.output(), 10, "the push report in the debug console")
    assert "applied" in ws.output()
    assert "pushing 1 changed or new file(s)" in ws.bridge.output()
    # `import lambda_debugger` ran again in the pushed module: one session, no second wrap.
    assert ws.function.logs().count("debugger attached; running the handler under debugpy") == 1


def test_restart_runs_the_invocation_again_with_each_edit(workspace):
    ws = workspace()
    ws.edit("app.py", EDITED)
    line = break_line(ws.path("app.py"))
    configured = ws.attach({"app.py": [line]})
    debugged = ws.function.invoke_async({"name": "ann"})
    configured.result(timeout=60)
    capabilities = next(m for m in ws.client.messages if m.get("command") == "initialize")["body"]
    assert capabilities["supportsRestartRequest"] is True
    _, frame = ws.stopped_frame()
    assert ws.client.evaluate("shout", frame["id"]) == "'HELLO ANN'"
    for edit, expected in ((".title() + '!'", "'Hello Ann!'"), (".replace('hello', 'bye')", "'bye ann'")):
        ws.edit("app.py", EDITED.replace(".upper()", edit))
        ws.client.request("restart", {}, timeout=30)
        thread_id, frame = ws.stopped_frame()
        assert frame["line"] == line
        assert ws.client.evaluate("shout", frame["id"]) == expected
    ws.client.continue_(thread_id)
    # The invocation's result is the last run's.
    assert payload(debugged.result(timeout=60)) == {"message": "bye ann", "run": "edited"}
    logs = ws.function.logs()
    assert logs.count("restart: running the handler again in a fresh child") == 2
    assert "the handler runs again from the top (run 3)" in ws.bridge.output()


def test_a_new_module_is_pushed_and_a_breakpoint_binds_in_it(workspace):
    ws = workspace()
    ws.edit(
        "pricing.py",
        "def total(items):\n    subtotal = sum(items)\n    return subtotal * 2  # BREAK\n",
    )
    ws.edit(
        "app.py",
        DEPLOYED.replace(
            '    return {"message"', '    from pricing import total\n    return {"total": total([1, 2]), "message"'
        ),
    )
    line = break_line(ws.path("pricing.py"))
    configured = ws.attach({"pricing.py": [line]})
    debugged = ws.function.invoke_async({"name": "ann"})
    bound = configured.result(timeout=60)[ws.path("pricing.py")]
    assert bound[0]["verified"], bound  # a file the task root does not have
    thread_id, frame = ws.stopped_frame()
    assert (frame["source"]["path"], frame["line"]) == (ws.path("pricing.py"), line)
    assert ws.client.evaluate("subtotal", frame["id"]) == "3"
    ws.client.continue_(thread_id)
    assert payload(debugged.result(timeout=60)) == {"total": 6, "message": "hello ann"}
    assert not os.path.exists(os.path.join(ws.root, "pricing.py"))  # nothing written to the task root
    assert "pricing.py" in ws.output() and "imported from the push" in ws.output()


def test_a_file_that_does_not_compile_is_reported_and_the_deployed_one_runs(workspace):
    ws = workspace()
    ws.edit("app.py", EDITED.replace("shout = ", "shout = = "))
    ws.edit("helpers.py", HELPERS.replace("hello", "hi"))
    configured = ws.attach({})
    result = ws.function.invoke({"name": "ann"})
    configured.result(timeout=60)
    # helpers.py applied, app.py not: the deployed handler with the new helper.
    assert payload(result) == {"message": "hi ann"}
    wait_until(lambda: "does not compile" in ws.output(), 10, "the compile error in the debug console")
    assert re.search(r"app\.py \(sha256 [0-9a-f]{12}\): not applied; does not compile: .*app\.py line 5", ws.output())
    assert "helpers.py" in ws.output()
    assert "does not compile" in ws.bridge.output()


def test_a_module_that_raises_while_running_again_keeps_the_deployed_one(workspace):
    ws = workspace()
    ws.edit("helpers.py", HELPERS + "\nraise RuntimeError('half-finished edit')\n")
    configured = ws.attach({})
    result = ws.function.invoke({"name": "ann"})
    configured.result(timeout=60)
    assert payload(result) == {"message": "hello ann"}
    wait_until(lambda: "half-finished edit" in ws.output(), 10, "the import error in the debug console")
    assert "raised while running again, the deployed module is used: RuntimeError: half-finished edit" in ws.output()


def test_an_oversized_push_is_refused_with_a_message_and_the_deployed_code_runs(workspace):
    ws = workspace()
    ws.edit("app.py", EDITED)
    ws.edit("big.py", "DATA = %r\n" % ("x" * (5 * 1024 * 1024 + 1)))
    configured = ws.attach({})
    result = ws.function.invoke({"name": "ann"})
    configured.result(timeout=60)
    assert payload(result) == {"message": "hello ann"}
    wait_until(lambda: "cannot push" in ws.output(), 10, "the refusal in the debug console")
    assert "more than 2000 files or 5 MB" in ws.output()
    assert "the deployed code runs" in ws.bridge.output()


def test_restart_is_refused_when_too_little_time_is_left(workspace):
    ws = workspace(timeout_s=6.0)
    ws.edit("app.py", EDITED)
    configured = ws.attach({"app.py": [break_line(ws.path("app.py"))]})
    debugged = ws.function.invoke_async({"name": "ann"})
    configured.result(timeout=60)
    thread_id, frame = ws.stopped_frame()
    left_ms = int(ws.client.evaluate("context.get_remaining_time_in_millis()", frame["id"]))
    time.sleep(max(0.0, (left_ms - 2700) / 1000.0))  # 2.7 s left: under the 3 s a restart needs
    seq = ws.client.send_request("restart", {})
    response = ws.client._wait_for(lambda: ws.client._responses.pop(seq, None), 10, "the restart answer")
    assert response["success"] is False
    assert "too little to run the handler again" in response["message"]
    ws.client.continue_(thread_id)
    assert payload(debugged.result(timeout=60)) == {"message": "HELLO ANN", "run": "edited"}


def test_a_debugger_that_leaves_during_a_restart_lets_the_invocation_finish(workspace):
    ws = workspace()
    ws.edit("app.py", EDITED)
    configured = ws.attach({"app.py": [break_line(ws.path("app.py"))]})
    debugged = ws.function.invoke_async({"name": "ann"})
    configured.result(timeout=60)
    ws.stopped_frame()
    ws.client.send_request("restart", {})
    wait_until(lambda: "restart: running the handler again" in ws.function.logs(), 20, "the restart")
    ws.client.close()  # gone before the new run is configured, or just after
    started = time.monotonic()
    result = debugged.result(timeout=30)
    assert time.monotonic() - started < 10  # not held until the Lambda timeout
    assert payload(result) in ({"message": "hello ann"}, {"message": "HELLO ANN", "run": "edited"})
