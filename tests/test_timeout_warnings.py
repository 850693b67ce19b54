"""Time left before the Lambda timeout, told to the IDE's debug console as
DAP output events that fall between debugpy's messages."""

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_debugger.developer.bridge import IdeEndpoint
from lambda_debugger.wire import dap
from tests.support.chain import break_line
from tests.support.dap_client import FrameParser, encode_message

pytestmark = pytest.mark.timeout(90)


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.text(min_size=0, max_size=3000), min_size=1, max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=60),
    injections=st.lists(st.booleans(), min_size=1, max_size=60),
)
def test_injected_events_never_split_a_message(bodies, cuts, injections):
    messages = [
        {"seq": i, "type": "event", "event": "output", "body": {"output": text}} for i, text in enumerate(bodies)
    ]
    stream = b"".join(encode_message(m) for m in messages)
    near, far = socket.socketpair()
    ide = IdeEndpoint(near)
    wire = []  # what the pump would queue for the IDE, in order
    position, step = 0, 0
    while position < len(stream):
        chunk = stream[position : position + cuts[step % len(cuts)]]
        position += len(chunk)
        wire.extend(ide.frame(chunk))
        if injections[step % len(injections)]:
            ide.inject(ide.dap.output("warning %d\n" % step))
        wire.append(ide.take_outgoing())
        step += 1
    wire.append(ide.take_outgoing())
    near.close()
    far.close()
    received = FrameParser().feed(b"".join(wire))
    own = [m for m in received if m.get("seq") >= dap.OWN_SEQ]
    assert [m for m in received if m.get("seq") < dap.OWN_SEQ] == messages
    assert len(own) == sum(injections[i % len(injections)] for i in range(step))
    assert all(m["body"]["output"].startswith("warning ") for m in own)


def test_a_stream_that_is_not_dap_gets_nothing_injected():
    talk = dap.Conversation()
    talk.adapter_chunks(b"Content-Type: text/plain\r\n\r\nhello")
    assert talk.from_adapter.broken and not talk.may_insert
    talk = dap.Conversation()
    talk.adapter_chunks(b"Content-Length: " + b"1" * (dap.MessageSplitter.MAX_HEADER_BYTES + 10))
    assert not talk.may_insert


@pytest.mark.slow
def test_the_debug_console_hears_the_time_left_while_stopped(broker, start_bridge, make_function):
    function = make_function(broker=broker, timeout_s=20)
    future = function.invoke_async()
    bridge = start_bridge(extra_args=["--warn-at", "14,11"])
    client = bridge.connect()
    client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
    stopped = client.wait_stopped(timeout=30)
    frame_id = client.stack_trace(stopped["threadId"])[0]["id"]
    first = client.wait_event("output", timeout=15, predicate=lambda e: "14 s left" in e["body"]["output"])
    second = client.wait_event("output", timeout=10, predicate=lambda e: "11 s left" in e["body"]["output"])
    assert first["body"]["category"] == second["body"]["category"] == "console"
    assert "before the Lambda timeout of request " in second["body"]["output"]
    # The stream is intact after the injections: requests still get answers.
    assert client.evaluate("len(event['items'])", frame_id) == "3"
    client.continue_(stopped["threadId"])
    result = future.result(timeout=15)
    assert result.ok and json.loads(result.payload)["total"] == 6
    output = bridge.output()
    assert "14 s left before the Lambda timeout of orders" in output
    assert "11 s left before the Lambda timeout of orders" in output
