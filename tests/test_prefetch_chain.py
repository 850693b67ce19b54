"""Prefetch on stop through the whole chain: every answer the IDE gets from
a stop's context is what debugpy gives at that moment."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from lambda_debugger.wire.dap import OWN_SEQ
from tests.support.chain import break_line

pytestmark = [pytest.mark.timeout(120), pytest.mark.chain]

SOURCE = """\
import threading
import time


def handler(event, context):
    total, squares, label, flag = 0, [], "", False
    for i in range(event.get("rounds", 4)):
        total += i  # BREAK
        squares.append(i * i)
        label = "round %d" % i
        flag = total > 2
    return {"total": total, "label": label}


def raising(event, context):
    try:
        raise ValueError("bad order %s" % event.get("order"))
    except ValueError as exc:
        note = str(exc)
    return {"note": note}


def threads(event, context):
    results, started, done = {}, [], []

    def work(name):
        started.append(name)
        while len(started) < 2 or (name == "b" and not done):  # user code: b stops with a
            time.sleep(0.001)
        value = name * 2
        results[name] = value  # WORK
        done.append(name)

    workers = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


import lambda_debugger  # noqa: E402,F401
"""

#: Not an argument debugpy knows: it ignores it, and no context answers it.
FORCE = {"lambdaDebuggerTest": True}

IDS = ("id", "variablesReference", "frameId", "threadId")


def without_ids(value):
    """``value`` without the ids debugpy numbers afresh in each session, and
    the context's repr (it names the request)."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in IDS}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    if isinstance(value, str) and value.startswith("LambdaContext("):
        return "LambdaContext(...)"
    return value


def ide_reads(client, thread_id, exception=False):
    """What VS Code asks after a stop, as whole responses: threads, the top
    frame, its scopes, Locals, the next 19 frames (and the exception)."""
    asked = [("threads", None), ("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 1})]
    responses = [client.exchange(command, arguments) for command, arguments in asked]
    frame_id = responses[1]["body"]["stackFrames"][0]["id"]
    asked.append(("scopes", {"frameId": frame_id}))
    responses.append(client.exchange(*asked[-1]))
    asked.append(("variables", {"variablesReference": responses[-1]["body"]["scopes"][0]["variablesReference"]}))
    responses.append(client.exchange(*asked[-1]))
    asked.append(("stackTrace", {"threadId": thread_id, "startFrame": 1, "levels": 19}))
    responses.append(client.exchange(*asked[-1]))
    if exception:
        asked.append(("exceptionInfo", {"threadId": thread_id}))
        responses.append(client.exchange(*asked[-1]))
    return asked, responses


def check_against_debugpy(client, asked, responses):
    """Each answer must come from the context (the bridge's own sequence
    numbers) and equal what debugpy answers now to the same question.

    debugpy numbers the group nodes of a variables answer ("special
    variables") afresh on every read, so there the ids may differ; each
    one in the context's answer must still expand to what debugpy's does.
    """
    for (command, arguments), response in zip(asked, responses, strict=True):
        assert response["success"], response
        assert response["seq"] >= OWN_SEQ, "%s was not answered from the stop's context" % command
        forced = client.exchange(command, dict(arguments or {}, **FORCE))
        assert forced["seq"] < OWN_SEQ  # debugpy's own answer
        if command != "variables":
            assert forced["body"] == response["body"], command
            continue
        assert without_ids(forced["body"]) == without_ids(response["body"])
        for ours, theirs in zip(response["body"]["variables"], forced["body"]["variables"], strict=True):
            if ours["variablesReference"]:
                expanded = [
                    client.request("variables", {"variablesReference": v["variablesReference"], **FORCE})
                    for v in (ours, theirs)
                ]
                assert without_ids(expanded[0]) == without_ids(expanded[1]), ours["name"]


def run_to_the_end(client, function, thread_id, result):
    """Clear the breakpoints, continue, and return the invocation's response."""
    client.request(
        "setBreakpoints", {"source": {"path": function.path}, "breakpoints": [], "lines": [], "sourceModified": False}
    )
    client.continue_(thread_id)  # resumes every thread, whatever the debugpy
    outcome = result.result(timeout=30)
    client.close()
    assert outcome.ok, outcome.payload
    return json.loads(outcome.payload)


def attach_stopped(bridge, function, line, **attach):
    client = bridge.connect()
    client.attach_and_configure({function.path: [line]}, timeout=30, **attach)
    return client, client.wait_stopped(timeout=30)


def step_transcript(start_bridge, function, prefetch):
    """Step through the loop, reading what VS Code reads at every stop;
    return the answers without their ids, and the invocation's result."""
    bridge = start_bridge(extra_args=() if prefetch else ("--no-prefetch",))
    result = function.invoke_async({"rounds": 3})
    client, stopped = attach_stopped(bridge, function, break_line(function.path))
    thread_id = stopped["threadId"]
    transcript = []
    for _ in range(12):
        asked, responses = ide_reads(client, thread_id)
        if prefetch:
            check_against_debugpy(client, asked, responses)
        else:
            assert all(r["seq"] < OWN_SEQ for r in responses)  # nothing answered on the way
        transcript.append([without_ids(r["body"]) for r in responses])
        client.request("next", {"threadId": thread_id})
        assert client.wait_stopped(timeout=30)["threadId"] == thread_id
    return transcript, run_to_the_end(client, function, thread_id, result)


def test_stepping_with_prefetch_answers_exactly_what_debugpy_answers_without_it(broker, start_bridge, make_function):
    function = make_function(broker=broker, source=SOURCE)
    with_prefetch, first = step_transcript(start_bridge, function, prefetch=True)
    without, second = step_transcript(start_bridge, function, prefetch=False)
    assert first == second
    assert with_prefetch == without
    locals_seen = [{v["name"]: v["value"] for v in stop[3]["variables"]} for stop in with_prefetch]
    assert len({(s.get("total"), s.get("label"), s.get("flag")) for s in locals_seen}) >= 5  # they did change


def test_an_exception_stop_ships_the_exception_too(broker, start_bridge, make_function):
    function = make_function("app.raising", broker=broker, source=SOURCE)
    result = function.invoke_async({"order": 7})
    bridge = start_bridge()
    client = bridge.connect()
    client.attach_and_configure({}, exception_filters=["raised"], timeout=30)
    stopped = client.wait_stopped(timeout=30)
    assert stopped["reason"] == "exception"
    asked, responses = ide_reads(client, stopped["threadId"], exception=True)
    check_against_debugpy(client, asked, responses)
    assert "bad order 7" in responses[-1]["body"]["description"]
    client.continue_(stopped["threadId"])
    assert json.loads(result.result(timeout=30).payload) == {"note": "bad order 7"}
    client.close()


def test_with_several_threads_stopped_the_context_answers_for_the_one_that_stopped(broker, start_bridge, make_function):
    function = make_function("app.threads", broker=broker, source=SOURCE)
    result = function.invoke_async({})
    bridge = start_bridge()
    client, stopped = attach_stopped(bridge, function, break_line(function.path, "# WORK"))
    assert stopped.get("allThreadsStopped")
    thread_id = stopped["threadId"]
    asked, responses = ide_reads(client, thread_id)
    check_against_debugpy(client, asked, responses)
    names = {t["id"]: t["name"] for t in responses[0]["body"]["threads"]}
    assert thread_id in names and len(names) >= 3  # the handler's thread and both workers
    spinning = []
    for other in set(names) - {thread_id}:  # not in the context: asked of debugpy
        frames = client.exchange("stackTrace", {"threadId": other, "startFrame": 0, "levels": 1})
        assert frames["seq"] < OWN_SEQ and frames["success"]
        top = frames["body"]["stackFrames"][0]
        if top["name"] == "work":  # the other worker, stopped in its loop
            spinning.append(other)
            scopes = client.exchange("scopes", {"frameId": top["id"]})
            assert scopes["seq"] < OWN_SEQ
            ref = scopes["body"]["scopes"][0]["variablesReference"]
            local = client.variables(ref)
            assert local["name"]["value"] == "'b'" and "value" not in local
    assert len(spinning) == 1
    # The context stays the stopped thread's: asked again, it still answers.
    again = client.exchange("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 1})
    assert again["seq"] >= OWN_SEQ and again["body"] == responses[1]["body"]
    assert run_to_the_end(client, function, thread_id, result) == {"a": "aa", "b": "bb"}


def test_a_set_variable_between_two_reads_is_seen_by_the_second(broker, start_bridge, make_function):
    function = make_function(broker=broker, source=SOURCE)
    result = function.invoke_async({"rounds": 2})
    bridge = start_bridge()
    client, stopped = attach_stopped(bridge, function, break_line(function.path))
    thread_id = stopped["threadId"]
    client.request("next", {"threadId": thread_id})
    client.wait_stopped(timeout=30)
    asked, responses = ide_reads(client, thread_id)
    locals_ref = asked[3][1]["variablesReference"]
    assert {v["name"]: v["value"] for v in responses[3]["body"]["variables"]}["total"] == "0"
    changed = client.exchange("setVariable", {"variablesReference": locals_ref, "name": "total", "value": "40"})
    assert changed["success"] and changed["body"]["value"] == "40"
    again = client.exchange("variables", {"variablesReference": locals_ref})
    assert again["seq"] < OWN_SEQ  # the context was dropped: debugpy answered
    assert {v["name"]: v["value"] for v in again["body"]["variables"]}["total"] == "40"
    assert run_to_the_end(client, function, thread_id, result) == {"total": 41, "label": "round 1"}


def test_requests_sent_while_a_context_is_on_its_way_get_debugpys_answers(broker, start_bridge, make_function):
    function = make_function(broker=broker, source=SOURCE)
    result = function.invoke_async({"rounds": 3})
    bridge = start_bridge()
    client, stopped = attach_stopped(bridge, function, break_line(function.path))
    thread_id = stopped["threadId"]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(6):
            client.request("next", {"threadId": thread_id})
            # Asked before the stop is known: whoever answers, it must be right.
            early = [
                pool.submit(client.exchange, "threads"),
                pool.submit(client.exchange, "stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 1}),
            ]
            client.wait_stopped(timeout=30)
            early = [f.result(timeout=30) for f in early]
            asked, responses = ide_reads(client, thread_id)
            check_against_debugpy(client, asked, responses)
            for answer, later in zip(early, responses, strict=False):
                if answer["seq"] >= OWN_SEQ:  # answered from the context: it must be the stop's
                    assert answer["body"] == later["body"]
    run_to_the_end(client, function, thread_id, result)


def test_questions_asked_together_each_get_their_own_answer(broker, start_bridge, make_function):
    function = make_function(broker=broker, source=SOURCE)
    result = function.invoke_async({"rounds": 3})
    bridge = start_bridge()
    client, stopped = attach_stopped(bridge, function, break_line(function.path))
    thread_id = stopped["threadId"]
    for _ in range(3):
        client.request("next", {"threadId": thread_id})
        client.wait_stopped(timeout=30)
        asked, responses = ide_reads(client, thread_id)
        frame_id, locals_ref = asked[2][1]["frameId"], asked[3][1]["variablesReference"]
        local = {v["name"]: v["value"] for v in responses[3]["body"]["variables"]}
        # As VS Code does after a stop: watches, Locals and a hover, all at once.
        expressions = ("total", "label", "total * 2", "len(squares)")
        seqs = [
            client.send_request("evaluate", {"expression": e, "frameId": frame_id, "context": "watch"})
            for e in expressions
        ]
        seqs.append(client.send_request("variables", {"variablesReference": locals_ref, **FORCE}))
        answers = [client.wait_response(seq, timeout=30) for seq in seqs]
        assert [a["result"] for a in answers[:4]] == [
            local["total"],
            local["label"],
            str(int(local["total"]) * 2),
            str(local["squares"].count(",") + 1 if local["squares"] != "[]" else 0),
        ]
        assert {v["name"]: v["value"] for v in answers[4]["variables"]} == local
    run_to_the_end(client, function, thread_id, result)
