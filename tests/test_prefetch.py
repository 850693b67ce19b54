"""Prefetch on stop, without processes: the Lambda side's collector, the
bridge's answers, and the debugpy endpoint over a socket pair."""

import json
import socket

import pytest

from lambda_debugger.lambda_side.debugpy_endpoint import ONE_AT_A_TIME_S, DebugpyEndpoint, OneAtATime
from lambda_debugger.wire import dap, prefetch
from tests.support.dap_client import FrameParser, encode_message

pytestmark = pytest.mark.timeout(30)

FRAMES = [{"id": 11, "name": "inner", "line": 5}, {"id": 12, "name": "outer", "line": 9}, {"id": 13, "name": "<m>"}]
SCOPES = [
    {"name": "Locals", "variablesReference": 21, "expensive": False},
    {"name": "Globals", "variablesReference": 22, "expensive": False},
    {"name": "Registers", "variablesReference": 23, "expensive": True},
]


def stopped(thread_id=1, reason="breakpoint"):
    return {"seq": 50, "type": "event", "event": "stopped", "body": {"threadId": thread_id, "reason": reason}}


def answer_to(question, body, success=True):
    return {
        "seq": 60,
        "type": "response",
        "request_seq": question["seq"],
        "command": question["command"],
        "success": success,
        "body": body,
    }


def debugpy_answers(question):
    """What a debugpy stopped in ``inner`` answers."""
    command = question["command"]
    return answer_to(
        question,
        {
            "threads": {"threads": [{"id": 1, "name": "MainThread"}]},
            "stackTrace": {"stackFrames": FRAMES, "totalFrames": 3},
            "scopes": {"scopes": SCOPES},
            "variables": {"variables": [{"name": "v%d" % question.get("arguments", {}).get("variablesReference", 0)}]},
            "exceptionInfo": {"exceptionId": "ValueError", "breakMode": "always"},
        }[command],
    )


def run_collector(collector, answer=debugpy_answers, now=0.0):
    """Answer the collector's questions, one at a time, until it has none;
    return the questions in the order asked."""
    asked = []
    while True:
        questions = [json.loads(q.split(b"\r\n\r\n", 1)[1]) for q in collector.take_requests()]
        assert len(questions) <= 1  # one at a time: pydevd stalls a second queued question
        if not questions:
            return asked
        asked.append(questions[0])
        collector.on_debugpy_message(answer(questions[0]), now)


def context_of(collector):
    (event,) = FrameParser().feed(collector.finish())
    assert event["event"] == prefetch.CONTEXT_EVENT
    return event


def test_a_collector_not_asked_for_prefetch_lets_a_stop_pass():
    collector = prefetch.StopCollector()
    collector.on_debugpy_message(stopped(), 0.0)
    assert not collector.holding and collector.take_requests() == []


def test_on_a_stop_the_collector_asks_what_an_ide_asks_one_question_at_a_time():
    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(thread_id=7), 0.0)
    assert collector.holding and not collector.done(0.0)
    asked = run_collector(collector)
    assert [(q["command"], q.get("arguments")) for q in asked] == [
        ("threads", None),
        ("stackTrace", {"threadId": 7}),
        ("scopes", {"frameId": 11}),
        ("variables", {"variablesReference": 21}),
        ("variables", {"variablesReference": 22}),  # not the expensive scope
    ]
    assert all(q["seq"] >= prefetch.COLLECTOR_SEQ for q in asked)
    assert all(collector.owns(debugpy_answers(q)) for q in asked)
    assert collector.done(0.0)
    event = context_of(collector)
    assert event["body"]["threadId"] == 7
    assert [a["command"] for a in event["body"]["answers"]] == [
        "threads",
        "stackTrace",
        "scopes",
        "variables",
        "variables",
    ]
    assert not collector.holding


def test_an_exception_stop_also_asks_for_the_exception():
    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(reason="exception"), 0.0)
    asked = run_collector(collector)
    assert [q["command"] for q in asked][:3] == ["threads", "stackTrace", "exceptionInfo"]


def test_an_answer_that_would_go_over_the_limit_is_left_out_and_a_failed_one_is_not_shipped():
    def answer(question):
        response = debugpy_answers(question)
        if question.get("arguments") == {"variablesReference": 21}:
            response["body"] = {"variables": [{"name": "huge", "value": "x" * prefetch.LIMIT_BYTES}]}
        if question.get("arguments") == {"variablesReference": 22}:
            response["success"] = False
        return response

    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(), 0.0)
    run_collector(collector, answer)
    answers = context_of(collector)["body"]["answers"]
    assert [a["command"] for a in answers] == ["threads", "stackTrace", "scopes"]
    assert len(json.dumps(answers)) <= prefetch.LIMIT_BYTES


def test_a_state_changing_request_during_the_hold_voids_the_context():
    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(), 0.0)
    collector.on_request({"seq": 3, "type": "request", "command": "stackTrace"})  # reading is fine
    collector.on_request({"seq": 4, "type": "request", "command": "setVariable"})
    run_collector(collector)
    assert collector.done(0.0) and collector.finish() == b""


def test_a_slow_debugpy_holds_the_stop_back_for_at_most_hold_s_and_its_late_answer_is_ignored():
    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(), 10.0)
    (question,) = [json.loads(q.split(b"\r\n\r\n", 1)[1]) for q in collector.take_requests()]
    assert collector.due == 10.0 + prefetch.HOLD_S
    assert not collector.done(10.0 + prefetch.HOLD_S - 0.01) and collector.done(10.0 + prefetch.HOLD_S)
    assert collector.finish() == b""  # nothing answered yet: nothing to ship
    collector.on_debugpy_message(stopped(thread_id=2), 11.0)  # the next stop
    late = debugpy_answers(question)
    assert collector.owns(late)  # still kept from the IDE
    collector.on_debugpy_message(late, 11.0)
    asked = run_collector(collector, now=11.0)
    assert asked[0]["command"] == "threads" and asked[0]["seq"] != question["seq"]
    assert [a["response"]["request_seq"] for a in context_of(collector)["body"]["answers"]] == [q["seq"] for q in asked]


def collected_context(reason="breakpoint"):
    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(reason=reason), 0.0)
    run_collector(collector)
    return context_of(collector)


def request(seq, command, **arguments):
    message = {"seq": seq, "type": "request", "command": command}
    if arguments:
        message["arguments"] = arguments
    return message


def test_the_bridge_answers_from_the_context_with_the_ides_request_seq():
    answers = prefetch.StopAnswers()
    assert answers.on_adapter_message(collected_context()) is True  # never shown to the IDE
    assert answers.on_adapter_message(stopped()) is False
    threads = answers.answer(request(5, "threads"))
    assert threads["request_seq"] == 5 and threads["body"]["threads"][0]["name"] == "MainThread"
    top = answers.answer(request(6, "stackTrace", threadId=1, startFrame=0, levels=1))
    assert top["body"] == {"stackFrames": FRAMES[:1], "totalFrames": 3}
    rest = answers.answer(request(7, "stackTrace", threadId=1, startFrame=1, levels=19))
    assert rest["body"] == {"stackFrames": FRAMES[1:], "totalFrames": 3}
    # pydevd ignores startFrame without levels: every frame.
    assert answers.answer(request(8, "stackTrace", threadId=1, startFrame=2))["body"]["stackFrames"] == FRAMES
    assert answers.answer(request(9, "scopes", frameId=11))["body"]["scopes"] == SCOPES
    assert answers.answer(request(10, "variables", variablesReference=22))["body"]["variables"] == [{"name": "v22"}]
    top["body"]["stackFrames"].clear()  # answers are copies
    assert answers.answer(request(11, "stackTrace", threadId=1, levels=1))["body"]["stackFrames"] == FRAMES[:1]
    assert answers.answered == 7


@pytest.mark.parametrize(
    "asked",
    [
        request(5, "stackTrace", threadId=2),  # another thread
        request(5, "stackTrace", threadId=1, format={"line": True}),  # names would differ
        request(5, "scopes", frameId=12),  # not the top frame
        request(5, "variables", variablesReference=23),  # not fetched (expensive)
        request(5, "variables", variablesReference=21, filter="indexed", start=0, count=10),
        request(5, "threads", extra=1),
        request(5, "exceptionInfo", threadId=1),  # not an exception stop
        request(5, "evaluate", expression="x", frameId=11, context="watch"),
    ],
)
def test_requests_the_context_does_not_answer_go_to_debugpy(asked):
    answers = prefetch.StopAnswers()
    answers.on_adapter_message(collected_context())
    assert answers.answer(asked) is None


@pytest.mark.parametrize(
    "change",
    [
        request(5, "continue", threadId=1),
        request(5, "next", threadId=1),
        request(5, "pause", threadId=1),
        request(5, "setVariable", variablesReference=21, name="v", value="1"),
        request(5, "setExpression", expression="v", value="1", frameId=11),
        request(5, "evaluate", expression="v = 1", frameId=11, context="repl"),
        request(5, "evaluate", expression="v = 1", frameId=11),
        request(5, "someCustomRequest"),
    ],
)
def test_a_request_that_resumes_or_changes_state_drops_the_context(change):
    answers = prefetch.StopAnswers()
    answers.on_adapter_message(collected_context())
    answers.on_request(request(4, "evaluate", expression="v", frameId=11, context="watch"))  # read only
    answers.on_request(request(4, "setBreakpoints", source={"path": "/x.py"}, breakpoints=[]))
    assert answers.answer(request(6, "threads")) is not None
    answers.on_request(change)
    assert answers.answer(request(7, "threads")) is None


@pytest.mark.parametrize(
    "event, kept",
    [
        ({"type": "event", "event": "output", "body": {"output": "x"}}, True),
        ({"type": "event", "event": "module", "body": {}}, True),
        ({"type": "event", "event": "continued", "body": {"threadId": 1}}, False),
        ({"type": "event", "event": "invalidated", "body": {}}, False),
        ({"type": "event", "event": "thread", "body": {"reason": "started", "threadId": 9}}, False),
        (stopped(thread_id=2), False),
        (stopped(thread_id=1), True),
    ],
)
def test_events_that_may_change_what_debugpy_answers_drop_the_context(event, kept):
    answers = prefetch.StopAnswers()
    answers.on_adapter_message(collected_context())
    answers.on_adapter_message(event)
    assert (answers.answer(request(6, "threads")) is not None) is kept


def test_a_context_that_arrives_while_a_state_change_is_unanswered_is_not_used():
    answers = prefetch.StopAnswers()
    answers.on_request(request(4, "setVariable", variablesReference=21, name="v", value="1"))
    assert answers.on_adapter_message(collected_context()) is True
    assert answers.answer(request(6, "threads")) is None
    answers.on_adapter_message(answer_to(request(4, "setVariable"), {}))
    assert answers.on_adapter_message(collected_context()) is True
    assert answers.answer(request(7, "threads")) is not None


class FakeDebugpy:
    """The far end of a loopback TCP connection, speaking as debugpy."""

    def __init__(self, **endpoint_options):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            ours = socket.create_connection(listener.getsockname())
            theirs, _ = listener.accept()
        self.endpoint = DebugpyEndpoint(ours, **endpoint_options)
        self.sock = theirs
        self.sock.settimeout(5)

    def close(self):
        self.sock.close()
        self.endpoint.close()

    def send(self, *messages):
        self.sock.sendall(b"".join(encode_message(m) for m in messages))


def relay_from_debugpy(fake):
    """What the endpoint hands the pump for the broker now."""
    data = fake.endpoint.read()
    return FrameParser().feed(data) if data else []


def test_the_endpoint_holds_a_stop_until_its_context_then_sends_the_context_first():
    fake = FakeDebugpy()
    to_debugpy = fake.endpoint.frame(prefetch.options_request(dap.OWN_SEQ) + encode_message(request(1, "threads")))
    assert FrameParser().feed(b"".join(to_debugpy)) == [request(1, "threads")]  # the options are the endpoint's
    output = {"seq": 51, "type": "event", "event": "output", "body": {"output": "after the stop"}}
    fake.send(stopped(), output)
    assert relay_from_debugpy(fake) == []  # held back
    forwarded = []
    while not forwarded:
        (question,) = FrameParser().feed(fake.endpoint.take_outgoing())
        fake.send(debugpy_answers(question))
        forwarded = relay_from_debugpy(fake)
    assert [m.get("event") for m in forwarded] == [prefetch.CONTEXT_EVENT, "stopped", "output"]
    fake.sock.close()
    assert fake.endpoint.read() is None
    fake.endpoint.close()


def test_the_endpoint_lets_a_stop_go_when_debugpy_does_not_answer_in_time(monkeypatch):
    fake = FakeDebugpy()
    fake.endpoint.frame(prefetch.options_request(dap.OWN_SEQ))
    fake.send(stopped())
    assert relay_from_debugpy(fake) == []
    assert fake.endpoint.take_outgoing()  # the first question, never answered
    due = fake.endpoint.due()
    assert due is not None and not fake.endpoint.has_buffered()
    monkeypatch.setattr("time.monotonic", lambda: due)
    assert fake.endpoint.has_buffered()
    assert [m.get("event") for m in relay_from_debugpy(fake)] == ["stopped"]
    assert fake.endpoint.due() is None
    fake.close()


def test_without_the_options_request_the_endpoint_relays_as_before():
    fake = FakeDebugpy()
    fake.endpoint.frame(encode_message(request(1, "initialize")))
    fake.send(stopped())
    assert [m.get("event") for m in relay_from_debugpy(fake)] == ["stopped"]
    assert fake.endpoint.take_outgoing() == b""
    fake.close()


def chunks_of(*messages):
    return dap.MessageSplitter().feed(b"".join(encode_message(m) for m in messages))


def test_requests_pydevd_runs_on_the_stopped_thread_go_one_at_a_time_in_stream_order():

    guard = OneAtATime()
    first, second = request(1, "evaluate", expression="a", context="watch"), request(2, "evaluate", expression="b")
    sent = []
    for chunk in chunks_of(first, second, request(3, "continue", threadId=1)):
        sent += guard.add(chunk, 0.0)
    assert FrameParser().feed(b"".join(sent)) == [first]  # the rest waits behind it
    assert guard.due == 0.0 + ONE_AT_A_TIME_S
    guard.answered(answer_to(request(9, "evaluate"), {}))  # not the one it runs
    assert guard.release(0.1) == []
    guard.answered(answer_to(first, {"result": "1"}))
    assert FrameParser().feed(b"".join(guard.release(0.1))) == [second]  # and continue stays behind it
    assert FrameParser().feed(b"".join(guard.release(0.1 + ONE_AT_A_TIME_S))) == [request(3, "continue", threadId=1)]
    assert guard.due is None and not guard.sent_inside_message


def test_a_large_request_streams_through_whole_and_other_requests_pass_at_once():

    guard = OneAtATime()
    big = request(1, "evaluate", expression="'%s'" % ("x" * (dap.PARSE_WHOLE_BYTES + 10)))
    data = encode_message(big)
    splitter, sent = dap.MessageSplitter(), []
    for piece in (data[:5000], data[5000:]):
        for chunk in splitter.feed(piece):
            sent += guard.add(chunk, 0.0)
            assert guard.sent_inside_message is not chunk.last
    assert b"".join(sent) == data  # never held behind itself
    for chunk in chunks_of(request(2, "threads"), request(3, "stackTrace", threadId=1)):
        assert guard.add(chunk, 0.0) == [chunk.data]


def test_a_continue_resumes_every_thread_unless_it_asks_for_one():
    fake = FakeDebugpy()
    sent = fake.endpoint.frame(
        encode_message(request(1, "continue", threadId=2))
        + encode_message(request(2, "continue", threadId=2, singleThread=True))
        + encode_message(request(3, "next", threadId=2))
    )
    assert FrameParser().feed(b"".join(sent)) == [
        request(1, "continue", threadId="*"),  # pydevd before 1.8.21 resumed thread 2 alone
        request(2, "continue", threadId=2, singleThread=True),
        request(3, "next", threadId=2),
    ]
    fake.close()


def vscode_style(message):
    """As VS Code writes a request: ``type`` and ``seq`` after the arguments."""
    ordered = {k: v for k, v in message.items() if k not in ("type", "seq")}
    ordered.update(type=message["type"], seq=message["seq"])
    return encode_message(ordered)


def ide_pair(prefetch=True):
    """An IdeEndpoint over loopback TCP, and the IDE's end of it."""
    from lambda_debugger.developer.bridge import IdeEndpoint

    with socket.create_server(("127.0.0.1", 0)) as listener:
        ide_side = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return IdeEndpoint(ours, prefetch=prefetch), ide_side


def test_a_request_too_large_to_read_drops_the_context_and_is_still_answered_on_end():
    endpoint, ide = ide_pair()
    endpoint.frame(encode_message(collected_context()) + encode_message(stopped()))
    huge = request(40, "evaluate", expression="x = 2  # " + "y" * dap.PARSE_WHOLE_BYTES, frameId=11, context="repl")
    ide.sendall(vscode_style(huge))
    forwarded = b""
    while len(forwarded) < len(vscode_style(huge)):
        forwarded += endpoint.read()
    assert forwarded == vscode_style(huge)  # passed on unchanged
    ide.sendall(encode_message(request(41, "variables", variablesReference=21)))
    assert FrameParser().feed(endpoint.read()) == [request(41, "variables", variablesReference=21)]  # not answered
    assert endpoint.dap.pending == {40: "evaluate", 41: "variables"}  # its seq, read from its end
    ide.close()
    endpoint.close()


def test_the_answer_to_the_options_request_from_an_older_lambda_side_never_reaches_the_ide():
    endpoint, ide = ide_pair()
    error = {
        "seq": 9,
        "type": "response",
        "request_seq": dap.OWN_SEQ,
        "command": prefetch.OPTIONS_COMMAND,
        "success": False,
        "message": "Unhandled",
    }
    output = {"seq": 10, "type": "event", "event": "output", "body": {"output": "x"}}
    assert FrameParser().feed(b"".join(endpoint.frame(encode_message(error) + encode_message(output)))) == [output]
    ide.close()
    endpoint.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "event", "event": "stopped", "body": ["not", "a", "dict"]},
        {
            "type": "event",
            "event": prefetch.CONTEXT_EVENT,
            "body": {"threadId": 1, "answers": [1, None, {"response": []}]},
        },
        {"type": "response", "request_seq": [1], "command": "threads"},
        {"type": "event", "event": prefetch.CONTEXT_EVENT, "body": "nonsense"},
    ],
)
def test_malformed_messages_from_the_lambda_side_are_taken_without_an_error(message):
    answers = prefetch.StopAnswers()
    answers.on_adapter_message(message)
    assert answers.answer(request(5, "threads")) is None


@pytest.mark.parametrize(
    "asked, kept",
    [
        ({"seq": 5, "type": "request", "command": ["threads"]}, False),
        ({"seq": 5, "type": "request", "command": "variables", "arguments": [1, 2]}, True),  # a read all the same
        ({"seq": 5, "type": "request", "command": "scopes", "arguments": {"frameId": [11]}}, True),
        ({"seq": 5, "type": "request", "command": "evaluate", "arguments": "x"}, False),
    ],
)
def test_malformed_requests_from_the_ide_are_passed_on_without_an_error(asked, kept):
    answers = prefetch.StopAnswers()
    answers.on_adapter_message(collected_context())
    assert answers.answer(asked) is None
    answers.on_request(asked)
    assert (answers.answer(request(6, "threads")) is not None) is kept
    fake = FakeDebugpy()
    sent = fake.endpoint.frame(encode_message(asked))  # no error on the Lambda side either
    assert FrameParser().feed(b"".join(sent)) == [asked]
    fake.close()


def test_a_state_change_debugpy_never_answers_blocks_contexts_only_for_a_while():
    answers = prefetch.StopAnswers()
    answers.on_request(request(4, "restartFrame", frameId=11), now=100.0)
    answers.on_adapter_message(collected_context(), now=101.0)
    assert answers.answer(request(5, "threads")) is None
    answers.on_adapter_message(collected_context(), now=100.0 + prefetch.CHANGE_ANSWER_S)
    assert answers.answer(request(6, "threads")) is not None


def test_questions_not_yet_sent_when_a_hold_ends_are_never_sent():
    collector = prefetch.StopCollector()
    collector.enabled = True
    collector.on_debugpy_message(stopped(), 0.0)  # the first question waits to be taken
    assert collector.done(prefetch.HOLD_S)
    collector.finish()
    assert collector.take_requests() == []


def test_a_leaving_debugger_s_held_requests_all_go_at_once():
    guard = OneAtATime()
    messages = [
        request(1, "evaluate", expression="a"),
        request(2, "evaluate", expression="b"),
        request(3, "disconnect"),
    ]
    sent = []
    for chunk in chunks_of(*messages):
        sent += guard.add(chunk, 0.0)
    assert len(sent) == 1
    sent += guard.release(0.0, everything=True)
    assert FrameParser().feed(b"".join(sent)) == messages


def test_deeply_nested_json_is_not_an_error():
    splitter = dap.MessageSplitter()
    body = b"[" * 100000 + b"]" * 100000
    (chunk,) = splitter.feed(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert chunk.head == {} and chunk.whole
