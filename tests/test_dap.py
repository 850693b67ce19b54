"""The one module that reads DAP: framing, the requests an IDE waits on,
and what the bridge says for the adapter when a session ends."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_debugger.wire import dap
from tests.support.dap_client import FrameParser, encode_message

pytestmark = pytest.mark.timeout(30)


def request(seq, command, **arguments):
    return {"seq": seq, "type": "request", "command": command, "arguments": arguments}


def response(seq, request_seq, command, success=True, body=None):
    return {
        "seq": seq,
        "type": "response",
        "request_seq": request_seq,
        "command": command,
        "success": success,
        "body": body or {},
    }


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.text(max_size=500), min_size=1, max_size=10),
    cuts=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30),
)
def test_the_splitter_returns_each_message_once_whatever_the_chunking(texts, cuts):
    messages = [{"seq": i, "type": "event", "event": "output", "body": {"output": t}} for i, t in enumerate(texts)]
    stream = b"".join(encode_message(m) for m in messages)
    splitter, got, position, step = dap.MessageSplitter(), [], 0, 0
    while position < len(stream):
        chunk = stream[position : position + cuts[step % len(cuts)]]
        position, step = position + len(chunk), step + 1
        got += [c.head for c in splitter.feed(chunk)]
    assert got == messages and splitter.at_boundary


def test_of_a_large_message_the_splitter_keeps_only_its_head():
    big = response(7, 3, "evaluate", body={"result": "x" * (dap.PARSE_WHOLE_BYTES + 10)})
    splitter = dap.MessageSplitter()
    data = encode_message(big)
    assert splitter.feed(data[:100]) == []
    assert not splitter.at_boundary
    chunks = splitter.feed(data[100:])
    assert chunks[-1].last and chunks[0].head is chunks[-1].head
    assert chunks[0].head == {"type": "response", "request_seq": 3, "command": "evaluate", "seq": 7}
    assert not splitter._buffer  # nothing of it kept


def test_a_stream_that_is_not_dap_breaks_the_splitter():
    splitter = dap.MessageSplitter()
    (chunk,) = splitter.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert chunk.unparsed and splitter.broken and not splitter.at_boundary


def test_the_conversation_knows_which_requests_wait_for_an_answer():
    talk = dap.Conversation()
    assert talk.ide_sent(encode_message(request(1, "initialize"))) == [request(1, "initialize")]
    talk.ide_sent(encode_message(request(2, "attach")) + encode_message(request(3, "threads"))[:10])
    assert talk.pending == {1: "initialize", 2: "attach"} and talk.messages_from_ide == 2
    talk.adapter_chunks(encode_message(response(1, 1, "initialize")))
    assert talk.pending == {2: "attach"}


def test_the_ending_says_why_answers_what_is_pending_then_exited_and_terminated():
    talk = dap.Conversation()
    talk.ide_sent(encode_message(request(5, "continue")) + encode_message(request(6, "evaluate")))
    messages = FrameParser().feed(talk.ending("the handler's process ended (exit status 3)", exit_code=3))
    assert [m.get("event") or m["type"] for m in messages] == ["output", "response", "response", "exited", "terminated"]
    output, first, second, exited, _ = messages
    assert output["body"] == {
        "category": "console",
        "output": "lambda-debugger: the handler's process ended (exit status 3)\n",
    }
    assert [(r["request_seq"], r["command"], r["success"]) for r in (first, second)] == [
        (5, "continue", False),
        (6, "evaluate", False),
    ]
    assert "body" not in first  # not a start request: no dialog
    assert first["message"] == "the handler's process ended (exit status 3)"
    assert exited["body"] == {"exitCode": 3}
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and min(seqs) >= dap.OWN_SEQ
    assert talk.pending == {}


def test_no_exit_code_no_exited_event_and_a_failed_start_shows_a_dialog():
    talk = dap.Conversation()
    talk.ide_sent(encode_message(request(1, "initialize")))
    messages = FrameParser().feed(talk.ending("cannot reach the broker"))
    assert [m.get("event") or m["type"] for m in messages] == ["output", "response", "terminated"]
    assert messages[1]["body"]["error"] == {"id": 1, "format": "cannot reach the broker", "showUser": True}


def test_events_the_adapter_sent_itself_are_not_sent_again():
    talk = dap.Conversation()
    talk.adapter_chunks(
        encode_message({"seq": 9, "type": "event", "event": "exited", "body": {"exitCode": 0}})
        + encode_message({"seq": 10, "type": "event", "event": "terminated"})
    )
    messages = FrameParser().feed(talk.ending("the handler returned", exit_code=0))
    assert [m.get("event") or m["type"] for m in messages] == ["output"]


def test_answers_are_framed_json():
    talk = dap.Conversation()
    data = talk.answer(4, "disconnect")
    header, _, body = data.partition(b"\r\n\r\n")
    assert header == b"Content-Length: %d" % len(body)
    assert json.loads(body)["success"] is True


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 10, 300, dap.HEAD_BYTES, dap.PARSE_WHOLE_BYTES + 5]), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=30),
)
def test_the_splitter_cuts_at_message_boundaries_and_loses_no_byte(sizes, cuts):
    messages = [response(i, i, "evaluate", body={"result": "x" * size}) for i, size in enumerate(sizes)]
    stream = b"".join(encode_message(m) for m in messages)
    splitter, chunks, position, step = dap.MessageSplitter(), [], 0, 0
    while position < len(stream):
        piece = stream[position : position + cuts[step % len(cuts)]]
        position, step = position + len(piece), step + 1
        chunks += splitter.feed(piece)
    assert b"".join(c.data for c in chunks) == stream and splitter.at_boundary
    starts = [c for c in chunks if c.first]
    assert [c.head["request_seq"] for c in starts] == [m["request_seq"] for m in messages]
    for chunk, message, size in zip(starts, messages, sizes, strict=True):
        assert chunk.data.startswith(b"Content-Length: ")
        if size <= dap.PARSE_WHOLE_BYTES - 200:
            assert chunk.last and chunk.head == message  # one chunk, parsed whole


def test_bytes_that_are_not_dap_pass_through_the_splitter_at_once():
    splitter = dap.MessageSplitter()
    (chunk,) = splitter.feed(b"to-debugpy")
    assert chunk.data == b"to-debugpy" and splitter.broken and splitter.inside_message
    assert [c.data for c in splitter.feed(b"more")] == [b"more"]
    partial = dap.MessageSplitter()
    assert partial.feed(b"Content-Len") == [] and not partial.broken  # a header on its way
