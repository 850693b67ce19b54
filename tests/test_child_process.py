"""The proxy's handle on a forked child and the pipe between them, with a
stand-in child (the real one, under debugpy, is covered end to end)."""

import os
import time

import pytest

from lambda_debugger.lambda_side import pipe
from lambda_debugger.lambda_side.child_process import ChildProcess
from lambda_debugger.lambda_side.pipe import PipeMessage

pytestmark = [pytest.mark.timeout(30), pytest.mark.slow]


def reporting_child(conn, handler, event, context, *, debug_logs=False, close_fds=()):
    for resource in close_fds:
        resource.close()
    conn.send((PipeMessage.READY, 5678))
    conn.send((PipeMessage.CONFIGURED,))
    if conn.recv() != PipeMessage.GO:
        os._exit(9)
    conn.send((PipeMessage.RESULT, handler(event, context)))
    os._exit(0)


def dying_child(conn, handler, event, context, **_):
    os._exit(3)


def silent_child(conn, handler, event, context, **_):
    time.sleep(60)


def test_a_child_reports_in_the_pipes_order_and_exits():
    child = ChildProcess(lambda event, context: {"got": event}, {"n": 1}, None, target=reporting_child)
    child.start()
    assert child.next_message(time.monotonic() + 10) == (PipeMessage.READY, 5678)
    assert child.next_message(time.monotonic() + 10) == (PipeMessage.CONFIGURED,)
    child.go()
    assert child.next_message(time.monotonic() + 10) == (PipeMessage.RESULT, {"got": {"n": 1}})
    child.end(reported=True)
    assert child.exitcode == 0


def test_a_child_that_dies_gives_no_message_and_its_exit_status():
    child = ChildProcess(None, {}, None, target=dying_child)
    child.start()
    assert child.next_message(time.monotonic() + 10) is None
    assert child.wait(0) and not child.is_alive()
    assert child.exitcode == 3
    child.end(reported=False)


def test_a_silent_child_times_out_and_is_killed():
    child = ChildProcess(None, {}, None, target=silent_child)
    child.start()
    started = time.monotonic()
    assert child.next_message(started + 0.3) is None
    assert time.monotonic() - started < 2
    child.end(reported=False)
    assert child.exitcode == -9


def test_pipe_messages_equal_their_names_and_are_all_named_once():
    assert PipeMessage.READY == "ready" and PipeMessage("result_json") is PipeMessage.RESULT_JSON
    assert len({m.value for m in PipeMessage}) == len(PipeMessage) == 9
    assert all(name in pipe.__doc__ for name in ("READY", "PUSH", "PUSHED", "CONFIGURED", "GO"))


def test_ending_twice_or_a_child_never_started_does_nothing_more():
    child = ChildProcess(None, {}, None, target=dying_child)
    child.end(reported=False)  # the fork failed before start
    assert child.conn.closed
    child = ChildProcess(None, {}, None, target=dying_child)
    child.start()
    assert child.next_message(time.monotonic() + 10) is None  # it exited
    child.end(reported=False)
    child.end(reported=False)
    assert child.exitcode == 3
