"""Live code push and restart, unit by unit: what is listed and pushed, the
limits, how the child applies files, the Lambda side's gate and replay, and
the bridge's side of the conversation."""

import base64
import importlib
import json
import linecache
import os
import socket
import sys
import time
import types

import pytest

from lambda_debugger.developer.live_code import DROP, PASS, LiveCode
from lambda_debugger.lambda_side import pushed_code
from lambda_debugger.lambda_side.debugpy_endpoint import REPLAY_SEQ
from lambda_debugger.wire import dap, prefetch, push
from tests import test_prefetch
from tests.support.dap_client import FrameParser, encode_message


def write(root, rel, text):
    path = os.path.join(str(root), *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


# What is listed -----------------------------------------------------------


def test_the_function_s_own_files_are_listed_and_dependencies_are_not(tmp_path):
    write(tmp_path, "app.py", "x = 1\n")
    write(tmp_path, "lib/__init__.py", "")
    write(tmp_path, "lib/util.py", "")
    write(tmp_path, "notes.txt", "")
    write(tmp_path, "requests/__init__.py", "")  # installed with pip install -t
    write(tmp_path, "requests-2.32.0.dist-info/RECORD", "requests/__init__.py,sha256=x,1\n")
    write(tmp_path, "six.py", "")
    write(tmp_path, "six-1.16.0.dist-info/RECORD", "six.py,sha256=x,1\n")
    write(tmp_path, ".venv/pyvenv.cfg", "")
    write(tmp_path, ".venv/lib/site.py", "")
    write(tmp_path, "env/pyvenv.cfg", "")
    write(tmp_path, "env/lib/os.py", "")
    write(tmp_path, "lib/__pycache__/util.py", "")
    write(tmp_path, "node_modules/x.py", "")
    files, complete = push.python_files(str(tmp_path))
    assert sorted(files) == ["app.py", "lib/__init__.py", "lib/util.py"]
    assert complete and files["app.py"] == str(tmp_path / "app.py")


def test_a_listing_past_its_limit_says_it_is_partial(tmp_path):
    for i in range(5):
        write(tmp_path, "m%d.py" % i, "")
    files, complete = push.python_files(str(tmp_path), limit=3)
    assert len(files) == 3 and not complete


def test_the_manifest_hashes_each_file(tmp_path):
    write(tmp_path, "app.py", "x = 1\n")
    manifest = push.manifest(str(tmp_path))
    assert manifest == {"root": str(tmp_path), "files": {"app.py": push.sha256(b"x = 1\n")}, "complete": True}


# What is pushed -----------------------------------------------------------


def test_the_plan_pushes_what_differs_or_is_new_and_nothing_else(tmp_path):
    write(tmp_path, "app.py", "changed\n")
    write(tmp_path, "same.py", "same\n")
    write(tmp_path, "pkg/new.py", "new\n")
    deployed = {"app.py": push.sha256(b"deployed\n"), "same.py": push.sha256(b"same\n"), "gone.py": "x"}
    plan = push.plan(str(tmp_path), deployed)
    assert [(f.path, f.source) for f in plan.files] == [("app.py", b"changed\n"), ("pkg/new.py", b"new\n")]
    assert plan.same == 1
    assert plan.describe() == "2 changed or new file(s), 12 bytes (app.py, pkg/new.py)"
    everything = {f.path: f.sha256 for f in plan.files}
    everything["same.py"] = deployed["same.py"]
    assert (
        push.plan(str(tmp_path), everything).describe()
        == "no local change: the 3 local file(s) equal the deployed ones"
    )


def test_a_plan_over_the_limits_is_refused(tmp_path, monkeypatch):
    write(tmp_path, "big.py", "x" * 200)
    monkeypatch.setattr(push, "MAX_BYTES", 100)
    with pytest.raises(push.PushRefused, match="more than 2000 files or 0 MB"):
        push.plan(str(tmp_path), {})
    monkeypatch.setattr(push, "MAX_BYTES", 10**6)
    monkeypatch.setattr(push, "MAX_FILES", 2)
    for i in range(3):
        write(tmp_path, "m%d.py" % i, "")
    with pytest.raises(push.PushRefused):
        push.plan(str(tmp_path), {})
    with pytest.raises(OSError, match="not a directory"):
        push.plan(str(tmp_path / "nowhere"), {})


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd.py", "../up.py", "a/../../b.py", "a//b.py", "./a.py", "a\\b.py", "a.txt", "a\0.py", 7, None, ""],
)
def test_a_path_outside_the_task_root_or_not_python_is_refused(path):
    with pytest.raises(push.PushRefused):
        push.check_path(path)


def test_files_travel_as_text_or_base64_and_come_back_checked():
    files = [push.PushedFile("a.py", b"x = 1\n", push.sha256(b"x = 1\n")), push.PushedFile("b.py", b"\xff\xfe", "")]
    encoded = push.encode_files(files)
    assert encoded[0]["text"] == "x = 1\n" and encoded[1]["base64"] == base64.b64encode(b"\xff\xfe").decode()
    decoded = push.decode_files(json.loads(json.dumps(encoded)))
    assert [(f.path, f.source, f.sha256) for f in decoded] == [
        ("a.py", b"x = 1\n", push.sha256(b"x = 1\n")),
        ("b.py", b"\xff\xfe", push.sha256(b"\xff\xfe")),
    ]


@pytest.mark.parametrize(
    "values, message",
    [
        (None, "no file list"),
        (["a.py"], "not an object"),
        ([{"path": "a.py"}], "no content"),
        ([{"path": "a.py", "base64": "!!"}], "unreadable"),
        ([{"path": "a.py", "text": ""}, {"path": "a.py", "text": ""}], "pushed twice"),
        ([{"path": "../a.py", "text": ""}], "not a relative path"),
        ([{"path": "m%d.py" % i, "text": ""} for i in range(push.MAX_FILES + 1)], "more than the 2000"),
        ([{"path": "a.py", "text": "x" * (push.MAX_BYTES + 1)}], "larger than 5 MB"),
    ],
)
def test_a_bad_push_is_refused_with_what_is_wrong(values, message):
    with pytest.raises(push.PushRefused, match=message):
        push.decode_files(values)


@pytest.mark.parametrize(
    "path, name", [("app.py", "app"), ("pkg/mod.py", "pkg.mod"), ("pkg/__init__.py", "pkg"), ("my-app.py", None)]
)
def test_module_names(path, name):
    assert push.module_name(path) == name


# How the child applies a push ----------------------------------------------


@pytest.fixture
def task_root(tmp_path, monkeypatch):
    """A task root on sys.path whose modules are forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    finder_before = pushed_code._the_finder
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]
    if pushed_code._the_finder is not None and pushed_code._the_finder is not finder_before:
        sys.meta_path.remove(pushed_code._the_finder)
    pushed_code._the_finder = finder_before
    pushed_code._sources.clear()
    importlib.invalidate_caches()
    api, files = sys.modules.get("_pydevd_bundle.pydevd_api"), sys.modules.get("pydevd_file_utils")
    if api is not None and getattr(api, "_lambda_debugger_patched", False):
        files.exists = files.exists.original
        api._get_code_lines = getattr(api._get_code_lines, "original", api._get_code_lines)
        api._lambda_debugger_patched = False


def pushed(path, text):
    return push.PushedFile(path, text.encode(), push.sha256(text.encode()))


def test_an_imported_module_runs_again_in_its_namespace_under_its_deployed_name(task_root):
    write(task_root, "lc_helpers.py", "def greet(n):\n    return 'hello ' + n\n")
    write(task_root, "lc_app.py", "from lc_helpers import greet\n\ndef handler(e, c):\n    return greet(e)\n")
    app = importlib.import_module("lc_app")
    module_before = sys.modules["lc_helpers"]
    report = pushed_code.apply(
        [
            pushed("lc_app.py", "from lc_helpers import greet\n\ndef handler(e, c):\n    return greet(e).upper()\n"),
            pushed("lc_helpers.py", "def greet(n):\n    return 'bye ' + n\n"),
        ],
        str(task_root),
    )
    assert [e["status"] for e in report] == ["applied", "applied"]
    assert sys.modules["lc_helpers"] is module_before
    # The helper ran again first: the handler's module imports the new one.
    assert app.handler("ann", None) == "BYE ANN"
    filename = str(task_root / "lc_app.py")
    assert app.handler.__code__.co_filename == filename
    assert "upper" in linecache.getline(filename, 4)


def test_names_imported_from_a_module_that_ran_again_follow_it(task_root):
    write(task_root, "lc_lib.py", "LIMIT = 5\n\ndef greet(n):\n    return 'hello ' + n\n\nclass Box:\n    pass\n")
    write(task_root, "lc_user.py", "from lc_lib import LIMIT, Box, greet\nRETRIES = 5\nkept = greet\n")
    user = importlib.import_module("lc_user")
    old_box = user.Box
    (entry,) = pushed_code.apply(
        [pushed("lc_lib.py", "LIMIT = 9\n\ndef greet(n):\n    return 'bye ' + n\n\nclass Box:\n    pass\n")],
        str(task_root),
    )
    assert entry["status"] == "applied"
    assert user.greet("ann") == "bye ann" and user.kept("ann") == "bye ann"
    assert user.Box is sys.modules["lc_lib"].Box is not old_box
    # Values are not followed: a number may be shared by unrelated names.
    assert (user.LIMIT, user.RETRIES) == (5, 5)


def test_a_file_that_does_not_compile_is_not_applied(task_root):
    write(task_root, "lc_broken.py", "VALUE = 1\n")
    module = importlib.import_module("lc_broken")
    (entry,) = pushed_code.apply([pushed("lc_broken.py", "VALUE = = 2\n")], str(task_root))
    assert entry["status"] == "not applied"
    assert entry["message"].startswith("does not compile: %s line 1: invalid syntax" % (task_root / "lc_broken.py"))
    assert module.VALUE == 1


def test_a_module_that_raises_is_put_back_as_it_was(task_root):
    write(task_root, "lc_raises.py", "VALUE = 1\n\ndef f():\n    return VALUE\n")
    module = importlib.import_module("lc_raises")
    f = module.f
    (entry,) = pushed_code.apply([pushed("lc_raises.py", "VALUE = 2\nNEW = 3\nraise KeyError('x')\n")], str(task_root))
    assert entry["status"] == "not applied"
    assert entry["message"] == "raised while running again, the deployed module is used: KeyError: 'x'"
    assert module.VALUE == 1 and module.f is f and not hasattr(module, "NEW")
    assert str(task_root / "lc_raises.py") not in linecache.cache or "NEW" not in "".join(
        linecache.cache[str(task_root / "lc_raises.py")][2]
    )


def test_a_new_module_is_imported_from_the_push_with_its_deployed_name(task_root):
    (entry,) = pushed_code.apply([pushed("lc_pkg/new_mod.py", "ANSWER = 42\n")], str(task_root))
    pushed_code.apply([pushed("lc_pkg/__init__.py", "")], str(task_root))
    assert entry["status"] == "imported from the push when the handler imports it"
    module = importlib.import_module("lc_pkg.new_mod")
    assert module.ANSWER == 42
    assert module.__file__ == str(task_root / "lc_pkg" / "new_mod.py")
    assert not (task_root / "lc_pkg").exists()  # nothing written


def test_a_lazily_imported_module_that_raises_falls_back_to_the_deployed_one(task_root, capsys):
    write(task_root, "lc_lazy.py", "ANSWER = 1\n")
    pushed_code.apply([pushed("lc_lazy.py", "ANSWER = 2\nraise ValueError('oops')\n")], str(task_root))
    module = importlib.import_module("lc_lazy")
    assert module.ANSWER == 1
    assert (
        "pushed %s raised while it was imported, the deployed module is used: ValueError: oops"
        % (task_root / "lc_lazy.py")
        in capsys.readouterr().err
    )
    pushed_code.apply([pushed("lc_fresh.py", "raise ValueError('no deployed one')\n")], str(task_root))
    with pytest.raises(ValueError, match="no deployed one"):
        importlib.import_module("lc_fresh")


def test_a_file_equal_to_the_deployed_one_is_left_alone(task_root):
    write(task_root, "lc_same.py", "COUNT = [0]\nCOUNT[0] += 1\n")
    module = importlib.import_module("lc_same")
    (entry,) = pushed_code.apply([pushed("lc_same.py", "COUNT = [0]\nCOUNT[0] += 1\n")], str(task_root))
    assert entry["status"] == "unchanged" and module.COUNT == [1]


def test_a_file_named_like_a_module_from_elsewhere_is_not_run_in_it(task_root):
    import token

    before = dict(vars(token))
    (entry,) = pushed_code.apply([pushed("token.py", "NAME = 'mine'\n")], str(task_root))
    assert entry["status"] == "not applied"
    assert entry["message"].startswith("not a module of the function: token is imported from ")
    assert vars(token) == before


def test_a_failure_of_the_compiler_itself_is_a_report(task_root):
    (entry,) = pushed_code.apply([pushed("lc_deep.py", "x = " + "(" * 100000 + ")" * 100000 + "\n")], str(task_root))
    assert entry["status"] == "not applied" and entry["message"].startswith("does not compile: ")


def test_the_handler_is_looked_up_again_and_never_wrapped_twice(monkeypatch):
    def deployed(event, context):
        return "deployed"

    def proxy(event, context):
        return "proxy"

    proxy.lambda_debugger_config = object()
    proxy.__wrapped__ = deployed
    module = types.ModuleType("lc_handler_module")
    module.handler = proxy
    monkeypatch.setitem(sys.modules, "lc_handler_module", module)
    monkeypatch.setenv("_HANDLER", "lc_handler_module.handler")
    applied = [{"status": "applied"}]
    assert pushed_code.current_handler(deployed, [{"status": "not applied"}]) is deployed
    assert pushed_code.current_handler(None, applied) is deployed  # the proxy, unwrapped

    def edited(event, context):
        return "edited"

    module.handler = edited
    assert pushed_code.current_handler(deployed, applied) is edited


def test_debugpy_sees_pushed_sources_where_it_reads_files(task_root):
    import debugpy._vendored.force_pydevd  # noqa: F401  (puts pydevd on the path, as listen() does)
    import pydevd_file_utils
    from _pydevd_bundle import pydevd_api

    pushed_code.apply([pushed("lc_only_pushed.py", "\n\nx = 1\ny = 2\n")], str(task_root))
    filename = str(task_root / "lc_only_pushed.py")
    assert pydevd_file_utils.exists(filename)
    on_disk = write(task_root, "lc_on_disk.py", "\n\nx = 1\ny = 2\n")
    lines = sorted(pydevd_api._get_code_lines(filename))
    assert lines == sorted(pydevd_api._get_code_lines(on_disk)) and 3 in lines and 1 not in lines
    assert not pydevd_file_utils.exists(str(task_root / "other.py"))


# The Lambda side's endpoint: gate, own requests, replay ------------------------


class FakeDebugpy(test_prefetch.FakeDebugpy):
    def to_debugpy(self, *messages):
        """Feed the endpoint the bridge's messages; return the commands let through now."""
        data = b"".join(self.endpoint.frame(b"".join(encode_message(m) for m in messages)))
        return commands(data)

    def outgoing(self):
        return commands(self.endpoint.take_outgoing())


def commands(data):
    return [m.get("command") for m in FrameParser().feed(data)] if data else []


def request(seq, command, arguments=None):
    return {"seq": seq, "type": "request", "command": command, "arguments": arguments or {}}


@pytest.fixture
def fake():
    made = []

    def make(**kwargs):
        made.append(FakeDebugpy(**kwargs))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_the_gate_holds_the_configuration_until_the_push_is_applied(fake):
    f = fake(gated=True)
    options = request(1, prefetch.OPTIONS_COMMAND, {"prefetch": True, "push": True})
    passed = f.to_debugpy(options, request(2, "initialize"), request(3, "attach"), request(4, "setBreakpoints"))
    assert passed == ["initialize", "attach"]
    assert f.to_debugpy(request(5, "initialize"), request(6, "configurationDone")) == []  # behind the held one
    assert [a[0] for a in f.endpoint.take_actions()] == ["options"]
    assert f.endpoint.options == {"prefetch": True, "push": True} and f.endpoint.collector.enabled
    f.endpoint.open_gate()
    assert f.outgoing() == ["setBreakpoints", "initialize", "configurationDone"]


def test_a_bridge_without_options_is_noted_at_its_first_message(fake):
    f = fake(gated=True)
    assert f.to_debugpy(request(1, "initialize")) == ["initialize"]
    assert f.endpoint.take_actions() == [("options", None)]


def test_a_push_larger_than_a_chunk_is_collected_whole(fake):
    f = fake()
    big = request(7, push.PUSH_COMMAND, {"files": [{"path": "a.py", "text": "x" * (dap.PARSE_WHOLE_BYTES * 2)}]})
    data = encode_message(big)
    passed = []
    for start in range(0, len(data), 65536):
        passed += f.endpoint.frame(data[start : start + 65536])
    assert passed == []
    ((command, got),) = f.endpoint.take_actions()
    assert command == push.PUSH_COMMAND and got == big


def test_a_push_over_the_limit_is_noted_unread(fake, monkeypatch):
    monkeypatch.setattr("lambda_debugger.lambda_side.debugpy_endpoint.MAX_OWN_REQUEST_BYTES", 1000)
    f = fake()
    f.endpoint.frame(encode_message(request(7, push.PUSH_COMMAND, {"files": [{"path": "a.py", "text": "x" * 5000}]})))
    ((command, got),) = f.endpoint.take_actions()
    assert command == push.PUSH_COMMAND and got == {"seq": 7, "command": push.PUSH_COMMAND, "too_large": True}


def test_what_follows_a_restart_waits_for_the_next_child_or_goes_on_if_refused(fake):
    f = fake()
    f.to_debugpy(request(1, "initialize"))
    f.endpoint.take_actions()
    passed = f.to_debugpy(request(2, push.RESTART_COMMAND, {"files": [], "configuration": []}), request(3, "threads"))
    assert passed == [] and [c.head["command"] for c in f.endpoint.after_restart] == ["threads"]
    assert [a[0] for a in f.endpoint.take_actions()] == [push.RESTART_COMMAND]
    f.endpoint.cancel_restart()
    assert f.outgoing() == ["threads"]
    assert f.to_debugpy(request(4, "stackTrace")) == ["stackTrace"]


def test_the_replay_goes_first_and_its_answers_never_reach_the_bridge(fake):
    replay = [{"command": "initialize", "arguments": {}}, {"command": "configurationDone", "arguments": {}}]
    f = fake(gated=True, replay=replay, options={"prefetch": False})
    assert f.to_debugpy(request(9, "threads")) == []
    assert f.endpoint.take_actions() == []  # the options are the first child's
    f.endpoint.open_gate()
    sent = FrameParser().feed(f.endpoint.take_outgoing())
    assert [(m["command"], m["seq"]) for m in sent] == [
        ("initialize", REPLAY_SEQ),
        ("configurationDone", REPLAY_SEQ + 1),
        ("threads", 9),
    ]
    answers = [
        {"seq": 1, "type": "response", "request_seq": REPLAY_SEQ, "command": "initialize", "success": True},
        {"seq": 2, "type": "event", "event": "initialized"},
        {"seq": 3, "type": "event", "event": "process", "body": {}},
        {"seq": 7, "type": "response", "request_seq": 8, "command": "threads", "success": True},
        {"seq": 4, "type": "response", "request_seq": REPLAY_SEQ + 1, "command": "configurationDone", "success": True},
        {"seq": 5, "type": "event", "event": "initialized"},
        {"seq": 6, "type": "response", "request_seq": 9, "command": "threads", "success": True},
    ]
    f.sock.sendall(b"".join(encode_message(m) for m in answers))
    time.sleep(0.1)
    relayed = FrameParser().feed(f.endpoint.read())
    assert [m["seq"] for m in relayed] == [3, 7, 5, 6]


def test_the_session_s_replies_go_between_two_messages(fake):
    f = fake()
    big = {"seq": 1, "type": "event", "event": "output", "body": {"output": "x" * (dap.PARSE_WHOLE_BYTES * 2)}}
    data = encode_message(big)
    f.sock.sendall(data[:5000])  # the message's head is out, not its end
    time.sleep(0.05)
    first = f.endpoint.read()
    f.endpoint.reply({"type": "response", "request_seq": 5, "command": "x", "success": True})
    assert not f.endpoint.has_buffered()  # inside debugpy's message
    f.sock.sendall(data[5000:])
    out = first
    deadline = time.monotonic() + 5
    while len(FrameParser().feed(out)) < 2 and time.monotonic() < deadline:
        out += f.endpoint.read() or b""
    messages = FrameParser().feed(out)
    assert [m.get("event") or m.get("command") for m in messages] == ["output", "x"]


# The bridge's side -------------------------------------------------------------


class Ide:
    def __init__(self, local_dir=None):
        self.said, self.sent = [], []
        self.conversation = dap.Conversation()
        self.live = LiveCode(local_dir, self.conversation, say=self.said.append, to_ide=self.sent.append)

    def messages(self):
        return [m for data in self.sent for m in FrameParser().feed(data)]

    def own(self):
        out = [m for data in self.live.own for m in FrameParser().feed(data)]
        self.live.own.clear()
        return out


def options_answer(ide, body):
    seq = json.loads(ide.live.options(True).split(b"\r\n\r\n", 1)[1])["seq"]
    return {"type": "response", "request_seq": seq, "command": prefetch.OPTIONS_COMMAND, "success": True, "body": body}


def test_the_bridge_pushes_what_differs_from_the_manifest(tmp_path):
    write(tmp_path, "app.py", "new\n")
    write(tmp_path, "same.py", "same\n")
    ide = Ide(str(tmp_path))
    options = json.loads(ide.live.options(False).split(b"\r\n\r\n", 1)[1])
    assert options["arguments"] == {"prefetch": False, "push": True}
    manifest = {"files": {"app.py": push.sha256(b"old\n"), "same.py": push.sha256(b"same\n")}}
    answer = options_answer(ide, {"restart": True, "push": True, "manifest": manifest})
    assert ide.live.from_adapter(answer, whole=True) == DROP
    (request_,) = ide.own()
    assert request_["command"] == push.PUSH_COMMAND
    assert request_["arguments"]["files"] == [{"path": "app.py", "sha256": push.sha256(b"new\n"), "text": "new\n"}]
    assert ide.said == ["pushing 1 changed or new file(s), 4 bytes (app.py)"]
    report = {"files": [{"path": "app.py", "sha256": "ab" * 32, "status": "applied", "message": ""}]}
    reply = {"type": "response", "request_seq": request_["seq"], "command": push.PUSH_COMMAND, "success": True}
    assert ide.live.from_adapter(dict(reply, body=report), whole=True) == DROP
    assert ide.messages()[-1]["body"]["output"] == "lambda-debugger: pushed app.py (sha256 abababababab): applied\n"


def test_a_pushed_folder_that_is_not_the_task_root_is_named(tmp_path):
    write(tmp_path, "src/app.py", "x\n")
    ide = Ide(str(tmp_path))
    ide.live.from_adapter(options_answer(ide, {"restart": True, "manifest": {"files": {"app.py": "ab"}}}), whole=True)
    assert "none of the local files is at a path the function has (it runs app.py)" in ide.said[-1]
    ide = Ide(str(tmp_path / "src"))
    ide.live.from_adapter(options_answer(ide, {"restart": True, "manifest": {"files": {"app.py": "ab"}}}), whole=True)
    assert ide.said == ["pushing 1 changed or new file(s), 2 bytes (app.py)"]


def test_a_manifest_too_large_for_one_answer_is_partial(tmp_path, monkeypatch):
    for i in range(10):
        write(tmp_path, "m%d.py" % i, "")
    monkeypatch.setattr(push, "MAX_MANIFEST_BYTES", 400)
    manifest = push.manifest(str(tmp_path))
    assert not manifest["complete"] and 0 < len(manifest["files"]) < 10


def test_an_older_lambda_side_is_named_and_no_restart_is_advertised(tmp_path):
    ide = Ide(str(tmp_path))
    ide.live.options(True)
    initialize = {"type": "response", "request_seq": 1, "command": "initialize", "success": True, "body": {}}
    assert ide.live.from_adapter(initialize, whole=True) == PASS
    assert "older than --push: it runs the deployed code" in ide.said[0]
    assert ide.own() == []


def test_initialize_advertises_restart_when_the_lambda_side_can(tmp_path):
    ide = Ide()
    ide.live.from_adapter(options_answer(ide, {"restart": True}), whole=True)
    initialize = {"type": "response", "request_seq": 1, "command": "initialize", "success": True, "body": {"a": 1}}
    changed = ide.live.from_adapter(initialize, whole=True)
    assert changed["body"] == {"a": 1, "supportsRestartRequest": True}


def configure(ide):
    for seq, command, arguments in [
        (1, "initialize", {"adapterID": "debugpy"}),
        (2, "attach", {"justMyCode": True}),
        (3, "setBreakpoints", {"source": {"path": "/l/a.py"}, "breakpoints": [{"line": 1}]}),
        (4, "setBreakpoints", {"source": {"path": "/l/b.py"}, "breakpoints": [{"line": 2}]}),
        (5, "setExceptionBreakpoints", {"filters": []}),
        (6, "configurationDone", {}),
        (7, "setBreakpoints", {"source": {"path": "/l/a.py"}, "breakpoints": [{"line": 9}]}),
    ]:
        assert ide.live.from_ide(request(seq, command, arguments)) is False


def test_restart_carries_the_files_as_they_are_now_and_the_ide_s_latest_configuration(tmp_path):
    write(tmp_path, "app.py", "v2\n")
    ide = Ide(str(tmp_path))
    ide.live.from_adapter(options_answer(ide, {"restart": True, "manifest": {"files": {}}}), whole=True)
    ide.own()
    ide.live.deadline_ms = (time.time() + 60) * 1000
    configure(ide)
    ide.live.from_adapter({"type": "event", "event": "stopped", "body": {"threadId": 4}}, whole=True)
    assert ide.live.from_ide(request(8, "restart", {})) is True
    (restart,) = ide.own()
    assert restart["command"] == push.RESTART_COMMAND
    assert [f["path"] for f in restart["arguments"]["files"]] == ["app.py"]
    replay = restart["arguments"]["configuration"]
    assert [(r["command"], r["arguments"].get("breakpoints")) for r in replay] == [
        ("initialize", None),
        ("attach", None),
        ("setBreakpoints", [{"line": 9}]),
        ("setBreakpoints", [{"line": 2}]),
        ("setExceptionBreakpoints", None),
        ("configurationDone", None),
    ]
    answer = {"type": "response", "request_seq": restart["seq"], "command": push.RESTART_COMMAND, "success": True}
    assert ide.live.from_adapter(dict(answer, body={"files": [], "run": 2}), whole=True) == DROP
    continued, response = ide.messages()
    assert continued["event"] == "continued" and continued["body"] == {"threadId": 4, "allThreadsContinued": True}
    assert (response["command"], response["request_seq"], response["success"]) == ("restart", 8, True)


def test_restart_is_refused_by_the_bridge_when_it_cannot_run(tmp_path):
    ide = Ide()
    ide.live.deadline_ms = (time.time() + 60) * 1000
    configure(ide)
    ide.live.from_ide(request(8, "restart"))
    assert "older than restart support" in ide.messages()[-1]["message"]
    ide.live.from_adapter(options_answer(ide, {"restart": True}), whole=True)
    ide.live.deadline_ms = (time.time() + 2) * 1000
    ide.live.from_ide(request(9, "restart"))
    response = ide.messages()[-1]
    assert response["request_seq"] == 9 and not response["success"]
    assert "too little to run the handler again" in response["message"]
    assert ide.own() == []
    failed = {"type": "response", "command": push.RESTART_COMMAND, "success": False, "message": "restart refused: x"}
    ide.live.deadline_ms = (time.time() + 60) * 1000
    ide.live.from_ide(request(10, "restart"))
    (restart,) = ide.own()
    ide.live.from_adapter(dict(failed, request_seq=restart["seq"]), whole=True)
    assert ide.messages()[-1]["message"] == "lambda-debugger: restart refused: x"


class Context:
    aws_request_id = "req-1"

    def __init__(self, left_ms):
        self.left_ms = left_ms

    def get_remaining_time_in_millis(self):
        return self.left_ms


RESTART = request(
    5,
    push.RESTART_COMMAND,
    {"files": [], "configuration": [{"command": "configurationDone", "arguments": {}}]},
)


@pytest.mark.parametrize(
    "left_ms, started, arguments, message",
    [
        (2000, True, RESTART["arguments"], "only 2.0 s left before the Lambda timeout"),
        (60000, False, RESTART["arguments"], "the handler has not started yet"),
        (60000, True, {"files": [], "configuration": []}, "no configuration ending with configurationDone"),
        (60000, True, dict(RESTART["arguments"], files=[{"path": "../x.py", "text": ""}]), "not a relative path"),
    ],
)
def test_the_lambda_side_refuses_a_restart_it_cannot_run(fake, left_ms, started, arguments, message):
    from lambda_debugger.lambda_side.config import LambdaConfig
    from lambda_debugger.lambda_side.proxy import DebugSession

    f = fake()
    session = DebugSession(
        LambdaConfig(broker_url="ws://unused/lambda/fn", function_id="fn"), None, {}, Context(left_ms)
    )
    session.debugpy, session.started = f.endpoint, started
    f.to_debugpy(request(1, "initialize"))
    f.endpoint.frame(encode_message(dict(RESTART, arguments=arguments)) + encode_message(request(6, "threads")))
    ((command, restart),) = [a for a in f.endpoint.take_actions() if a[0] != "options"]
    assert session._restart(restart) is True
    (answer,) = FrameParser().feed(f.endpoint.unsent())
    assert answer["request_seq"] == 5 and not answer["success"] and message in answer["message"]
    assert f.outgoing() == ["threads"]  # what came after it goes to the same debugpy


class IdeSide:
    """The bridge's IDE endpoint over a socket pair, as the pump drives it."""

    def __init__(self, push_dir=None):
        self.ours, self.theirs = socket.socketpair()
        from lambda_debugger.developer.bridge import IdeEndpoint

        self.said = []
        self.endpoint = IdeEndpoint(self.ours, push_dir=push_dir, say=self.said.append)

    def close(self):
        self.ours.close()
        self.theirs.close()


def test_a_large_answer_to_the_options_is_collected_and_the_push_follows(tmp_path):
    write(tmp_path, "app.py", "new\n")
    ide = IdeSide(str(tmp_path))
    try:
        options = json.loads(ide.endpoint.live.options(True).split(b"\r\n\r\n", 1)[1])
        files = {"lib/m%05d.py" % i: "ab" * 32 for i in range(4000)}  # about 400 KB
        files["app.py"] = push.sha256(b"old\n")
        answer = {
            "seq": 1,
            "type": "response",
            "request_seq": options["seq"],
            "command": prefetch.OPTIONS_COMMAND,
            "success": True,
            "body": {"restart": True, "push": True, "manifest": {"files": files}},
        }
        data = encode_message(answer)
        assert len(data) > dap.PARSE_WHOLE_BYTES
        out = []
        for start in range(0, len(data), 65536):
            out += ide.endpoint.frame(data[start : start + 65536])
        assert b"".join(out) == b""  # nothing of it reaches the IDE
        assert ide.endpoint.control_waiting()
        (push_request,) = FrameParser().feed(b"".join(ide.endpoint.take_for_adapter()))
        assert push_request["command"] == push.PUSH_COMMAND
        assert [f["path"] for f in push_request["arguments"]["files"]] == ["app.py"]
        assert ide.endpoint.live.supported
    finally:
        ide.close()


def test_after_a_restart_the_ide_hears_continued_and_the_answer_before_the_new_stop(tmp_path):
    ide = IdeSide()
    try:
        live = ide.endpoint.live
        live.from_adapter(options_answer_for(live, {"restart": True}), whole=True)
        live.deadline_ms = (time.time() + 60) * 1000
        ide.theirs.sendall(
            b"".join(
                encode_message(request(seq, command, arguments))
                for seq, command, arguments in [
                    (1, "initialize", {}),
                    (2, "attach", {}),
                    (3, "configurationDone", {}),
                    (4, "evaluate", {"expression": "x", "context": "watch"}),
                    (5, "restart", {}),
                ]
            )
        )
        time.sleep(0.05)
        forwarded = commands(ide.endpoint.read())
        assert forwarded == ["initialize", "attach", "configurationDone", "evaluate"]
        for seq, command in ((1, "initialize"), (2, "attach"), (3, "configurationDone")):
            ide.endpoint.frame(
                encode_message(
                    {"seq": seq, "type": "response", "request_seq": seq, "command": command, "success": True}
                )
            )
        (restart,) = FrameParser().feed(b"".join(ide.endpoint.take_for_adapter()))
        ide.endpoint.live.from_ide(request(6, "restart"))  # a second one while the first is under way
        refused = FrameParser().feed(ide.endpoint.take_outgoing())
        assert refused[-1]["request_seq"] == 6 and "already under way" in refused[-1]["message"]
        live.from_adapter({"type": "event", "event": "stopped", "body": {"threadId": 1}}, whole=True)
        answer = {"seq": 9, "type": "response", "request_seq": restart["seq"], "command": push.RESTART_COMMAND}
        out = ide.endpoint.frame(
            encode_message(dict(answer, success=True, body={"files": [], "run": 2}))
            + encode_message({"seq": 10, "type": "event", "event": "stopped", "body": {"threadId": 1}})
        )
        messages = FrameParser().feed(b"".join(out))
        assert [(m["type"], m.get("command") or m.get("event"), m.get("request_seq")) for m in messages] == [
            ("response", "evaluate", 4),  # never answered by the old run: cancelled
            ("event", "continued", None),
            ("response", "restart", 5),
            ("event", "stopped", None),
        ]
        assert not messages[0]["success"] and "restarted" in messages[0]["message"]
    finally:
        ide.close()


def options_answer_for(live, body):
    seq = json.loads(live.options(True).split(b"\r\n\r\n", 1)[1])["seq"]
    return {"type": "response", "request_seq": seq, "command": prefetch.OPTIONS_COMMAND, "success": True, "body": body}
