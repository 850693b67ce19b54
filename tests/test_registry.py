"""Pure tests of the broker's pairing logic, with fake peers and fake time."""

import pytest

from broker_server.registry import Registry, Session, SessionState
from lambda_debugger.wire.protocol import Armed, CloseCode, Detached, Invocation, Paired

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0  # a Unix time; the registry never reads the clock

#: What a debugger that arrives at T0 hears: the wait ends after pairing_timeout_s.
ARMED_AT_T0 = Armed(function_id="fn", expires_ms=int((T0 + 900) * 1000))


class FakePeer:
    """Records what the registry tells it."""

    def __init__(self, name: str) -> None:
        self.address = name
        self.sent = []
        self.closed = None

    def send_control(self, message) -> None:
        self.sent.append(message)

    def close(self, code, reason) -> None:
        assert self.closed is None, "closed twice"
        self.closed = (code, reason)

    def __repr__(self) -> str:
        return "FakePeer(%s)" % self.address


def invocation(request_id="req-1", deadline_ms=int((T0 + 600) * 1000), wait_ms=60_000, **kwargs):
    return Invocation(request_id=request_id, deadline_ms=deadline_ms, wait_ms=wait_ms, **kwargs)


def paired(request_id="req-1", function_id="fn", attachment=1, **kwargs):
    inv = invocation(request_id, **kwargs)
    return Paired(
        function_id=function_id,
        request_id=inv.request_id,
        deadline_ms=inv.deadline_ms,
        function_name=inv.function_name,
        runtime=inv.runtime,
        attachment=attachment,
    )


@pytest.fixture
def registry():
    return Registry(max_sessions=10, max_sessions_per_function=5, pairing_timeout_s=900)


# Pairing ------------------------------------------------------------------


def test_lambda_first_then_debugger_pairs(registry):
    lam, dbg = FakePeer("lambda"), FakePeer("debugger")
    inv = invocation(function_name="my-function", runtime="python3.12")
    session = registry.lambda_arrived(lam, "fn", inv, T0)
    assert session.state is SessionState.WAITING
    assert lam.sent == []
    assert registry.debugger_arrived(dbg, "fn", T0 + 3) is session
    assert session.state is SessionState.PAIRED
    expected = Paired("fn", "req-1", inv.deadline_ms, "my-function", "python3.12")
    assert lam.sent == [expected]
    assert dbg.sent == [expected]
    assert session.partner(lam) is dbg and session.partner(dbg) is lam
    assert len(registry) == 1
    assert lam.closed is None and dbg.closed is None


def test_debugger_first_is_armed_then_pairs(registry):
    lam, dbg = FakePeer("lambda"), FakePeer("debugger")
    session = registry.debugger_arrived(dbg, "fn", T0)
    assert session.state is SessionState.ARMED
    assert dbg.sent == [ARMED_AT_T0]
    assert session.partner(dbg) is None
    assert registry.lambda_arrived(lam, "fn", invocation(), T0 + 1) is session
    assert session.state is SessionState.PAIRED
    assert dbg.sent == [ARMED_AT_T0, paired()]
    assert lam.sent == [paired()]
    assert len(registry) == 1


def test_only_the_same_function_id_pairs(registry):
    lam, dbg = FakePeer("lambda"), FakePeer("debugger")
    registry.lambda_arrived(lam, "fn-a", invocation(), T0)
    session = registry.debugger_arrived(dbg, "fn-b", T0)
    assert session.state is SessionState.ARMED
    assert lam.sent == []
    assert len(registry) == 2


def test_armed_debuggers_are_served_oldest_first(registry):
    debuggers = [FakePeer("d%d" % i) for i in range(3)]
    for i, dbg in enumerate(debuggers):
        registry.debugger_arrived(dbg, "fn", T0 + i)
    lambdas = [FakePeer("l%d" % i) for i in range(2)]
    sessions = [
        registry.lambda_arrived(lam, "fn", invocation("req-%d" % i), T0 + 10 + i) for i, lam in enumerate(lambdas)
    ]
    assert sessions[0].partner(lambdas[0]) is debuggers[0]
    assert sessions[1].partner(lambdas[1]) is debuggers[1]
    assert registry.session_of(debuggers[2]).state is SessionState.ARMED


def test_waiting_invocations_are_served_oldest_first(registry):
    lambdas = [FakePeer("l%d" % i) for i in range(3)]
    for i, lam in enumerate(lambdas):
        registry.lambda_arrived(lam, "fn", invocation("req-%d" % i), T0 + i)
    dbg = FakePeer("debugger")
    session = registry.debugger_arrived(dbg, "fn", T0 + 10)
    assert session.request_id == "req-0"
    assert session.partner(dbg) is lambdas[0]
    assert [registry.session_of(lam).state for lam in lambdas] == [
        SessionState.PAIRED,
        SessionState.WAITING,
        SessionState.WAITING,
    ]


def test_two_containers_of_one_function_are_two_sessions(registry):
    l1, l2, d1, d2 = FakePeer("l1"), FakePeer("l2"), FakePeer("d1"), FakePeer("d2")
    s1 = registry.lambda_arrived(l1, "fn", invocation("req-1"), T0)
    s2 = registry.lambda_arrived(l2, "fn", invocation("req-2"), T0 + 1)
    assert s1 is not s2
    registry.debugger_arrived(d1, "fn", T0 + 2)
    registry.debugger_arrived(d2, "fn", T0 + 3)
    assert s1.partner(l1) is d1 and s2.partner(l2) is d2
    assert [m.request_id for m in d1.sent] == ["req-1"]
    assert [m.request_id for m in d2.sent] == ["req-2"]
    assert len(registry) == 2


def test_one_debugger_per_invocation(registry):
    lam, d1, d2 = FakePeer("lambda"), FakePeer("d1"), FakePeer("d2")
    session = registry.lambda_arrived(lam, "fn", invocation(), T0)
    registry.debugger_arrived(d1, "fn", T0 + 1)
    second = registry.debugger_arrived(d2, "fn", T0 + 2)
    assert second is not session
    assert second.state is SessionState.ARMED
    assert d2.sent == [Armed(function_id="fn", expires_ms=int((T0 + 902) * 1000))]
    assert session.partner(lam) is d1
    assert lam.sent == [paired()]  # told once, about d1 only


def test_a_peer_cannot_register_twice(registry):
    dbg = FakePeer("debugger")
    registry.debugger_arrived(dbg, "fn", T0)
    with pytest.raises(ValueError):
        registry.debugger_arrived(dbg, "fn", T0)


# Leaving ------------------------------------------------------------------


def make_pair(registry, now=T0):
    lam, dbg = FakePeer("lambda"), FakePeer("debugger")
    registry.lambda_arrived(lam, "fn", invocation(), now)
    session = registry.debugger_arrived(dbg, "fn", now)
    return session, lam, dbg


@pytest.mark.parametrize("code", [None, CloseCode.NORMAL, CloseCode.GOING_AWAY, 1006])
def test_lambda_leaving_closes_debugger_with_peer_gone(registry, code):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(lam, code)
    assert dbg.closed == (CloseCode.PEER_GONE, "lambda side disconnected")
    assert lam.closed is None  # it left by itself
    assert session.state is SessionState.CLOSED
    assert len(registry) == 0
    assert registry.session_of(dbg) is None


@pytest.mark.parametrize("code", [None, CloseCode.NORMAL, CloseCode.INVOCATION_DONE, 1006])
def test_debugger_leaving_detaches_the_session(registry, code):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(dbg, code, now=T0 + 3)
    # The Lambda side stays: the handler runs on and may be debugged again.
    assert lam.closed is None and dbg.closed is None
    assert lam.sent[-1] == Detached(reason="debugger disconnected")
    assert session.state is SessionState.DETACHED and session.since == T0 + 3
    assert session.debugger_peer is None and registry.session_of(dbg) is None
    assert registry.session_of(lam) is session and len(registry) == 1
    registry.peer_left(dbg)  # its on_close reports again: ignored
    assert session.state is SessionState.DETACHED


def test_a_detached_invocation_pairs_again_only_after_its_old_stream_ended(registry):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(dbg, CloseCode.NORMAL, now=T0 + 1)
    assert registry.drops_stream_of(lam)
    # Until the Lambda side answers, its old debug bytes may still be on the
    # way; a new debugger must not receive them, so it arms.
    early = FakePeer("early")
    assert registry.debugger_arrived(early, "fn", T0 + 2).state is SessionState.ARMED
    registry.peer_left(early)
    assert registry.lambda_detached(lam, T0 + 3)
    assert session.state is SessionState.DETACHED
    assert not registry.drops_stream_of(lam)
    assert not registry.lambda_detached(lam, T0 + 3)  # answered once only
    second = FakePeer("second")
    assert registry.debugger_arrived(second, "fn", T0 + 4) is session
    assert session.state is SessionState.PAIRED and session.attachments == 2
    assert lam.sent[-1] == second.sent[-1] == paired(attachment=2)
    assert session.to_dict()["attachments"] == 2
    registry.peer_left(lam, CloseCode.INVOCATION_DONE)
    assert second.closed == (CloseCode.INVOCATION_DONE, "invocation finished")
    assert len(registry) == 0


def test_a_debugger_that_armed_while_the_old_stream_ended_is_paired_then(registry):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(dbg, now=T0 + 1)
    early = FakePeer("early")
    registry.debugger_arrived(early, "fn", T0 + 2)
    assert len(registry) == 2
    registry.lambda_detached(lam, T0 + 3)
    assert registry.session_of(early) is session and session.debugger_peer is early
    assert session.state is SessionState.PAIRED and session.attachments == 2
    assert early.sent == [Armed("fn", int((T0 + 2 + 900) * 1000)), paired(attachment=2)]
    assert len(registry) == 1 and registry.sessions() == [session]


def test_a_detached_invocation_comes_before_newer_waiting_ones(registry):
    session, lam, dbg = make_pair(registry)
    newer = FakePeer("newer")
    registry.lambda_arrived(newer, "fn", invocation("req-2"), T0 + 1)
    registry.peer_left(dbg, now=T0 + 2)
    registry.lambda_detached(lam, T0 + 2)
    assert registry.debugger_arrived(FakePeer("again"), "fn", T0 + 3) is session


def test_detached_answers_and_dropping_apply_to_detached_lambdas_only(registry):
    session, lam, dbg = make_pair(registry)
    assert not registry.lambda_detached(lam, T0)  # paired: nothing to answer
    assert not registry.lambda_detached(dbg, T0)
    assert not registry.drops_stream_of(lam) and not registry.drops_stream_of(dbg)
    assert not registry.lambda_detached(FakePeer("stranger"), T0)


def test_a_detached_lambda_that_leaves_ends_the_session_quietly(registry):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(dbg)
    registry.peer_left(lam, CloseCode.INVOCATION_DONE)
    assert lam.closed is None and len(registry) == 0


def test_a_detached_session_is_reaped_after_its_deadline(registry):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(dbg, now=T0 + 1)
    deadline_s = session.invocation.deadline_ms / 1000
    assert registry.reap(deadline_s + registry.deadline_grace_s - 0.1) == []
    assert registry.reap(deadline_s + registry.deadline_grace_s) == [session]
    assert lam.closed == (CloseCode.INVOCATION_DONE, "invocation deadline passed")


def test_invocation_done_is_forwarded_to_the_debugger(registry):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(lam, CloseCode.INVOCATION_DONE)
    assert dbg.closed == (CloseCode.INVOCATION_DONE, "invocation finished")


def test_leaving_twice_and_unknown_peers_are_ignored(registry):
    session, lam, dbg = make_pair(registry)
    registry.peer_left(lam)
    registry.peer_left(lam)
    registry.peer_left(dbg)  # the registry closed it; its on_close reports back
    registry.peer_left(FakePeer("stranger"))
    assert dbg.closed == (CloseCode.PEER_GONE, "lambda side disconnected")
    assert len(registry) == 0


def test_unpaired_sides_that_leave_are_removed_quietly(registry):
    lam, dbg = FakePeer("lambda"), FakePeer("debugger")
    registry.lambda_arrived(lam, "fn", invocation(), T0)
    registry.peer_left(lam)
    assert lam.closed is None
    assert len(registry) == 0
    # A debugger now finds nothing to pair with, and arms.
    assert registry.debugger_arrived(dbg, "fn", T0 + 1).state is SessionState.ARMED
    registry.peer_left(dbg)
    assert dbg.closed is None
    assert registry.snapshot() == []


def test_a_peer_that_raises_does_not_stop_the_others(registry):
    class Broken(FakePeer):
        def close(self, code, reason):
            raise RuntimeError("connection exploded")

    broken, lam = Broken("broken"), FakePeer("lambda")
    registry.debugger_arrived(broken, "fn", T0)
    other_lam, other_dbg = FakePeer("l2"), FakePeer("d2")
    registry.lambda_arrived(lam, "fn", invocation(), T0)  # pairs with broken
    registry.lambda_arrived(other_lam, "other", invocation("req-2"), T0)
    registry.debugger_arrived(other_dbg, "other", T0)
    registry.close_all(CloseCode.GOING_AWAY, "broker shutting down")
    assert lam.closed == (CloseCode.GOING_AWAY, "broker shutting down")
    assert other_lam.closed == other_dbg.closed == (CloseCode.GOING_AWAY, "broker shutting down")
    assert len(registry) == 0


# Reaping ------------------------------------------------------------------


def test_armed_debugger_is_reaped_after_the_pairing_timeout(registry):
    dbg = FakePeer("debugger")
    registry.debugger_arrived(dbg, "fn", T0)
    assert registry.reap(T0 + 899.9) == []
    assert dbg.closed is None
    [session] = registry.reap(T0 + 900)
    assert session.function_id == "fn"
    assert dbg.closed[0] == CloseCode.PAIRING_TIMEOUT
    assert "900 s" in dbg.closed[1]
    assert len(registry) == 0
    assert registry.reap(T0 + 2000) == []


def test_waiting_invocation_is_reaped_after_wait_plus_grace(registry):
    lam = FakePeer("lambda")
    registry.lambda_arrived(lam, "fn", invocation(wait_ms=10_000), T0)
    assert registry.reap(T0 + 10 + registry.wait_grace_s - 0.1) == []
    assert len(registry.reap(T0 + 10 + registry.wait_grace_s)) == 1
    assert lam.closed == (CloseCode.NOT_WAITING, "invocation stopped waiting for a debugger")


def test_waiting_invocation_is_reaped_at_its_deadline(registry):
    lam = FakePeer("lambda")
    # The deadline comes before the wait would end.
    registry.lambda_arrived(lam, "fn", invocation(deadline_ms=int((T0 + 5) * 1000), wait_ms=60_000), T0)
    assert registry.reap(T0 + 4.99) == []
    assert len(registry.reap(T0 + 5)) == 1
    assert lam.closed[0] == CloseCode.NOT_WAITING
    assert "deadline" in lam.closed[1]


def test_invocation_without_wait_is_refused_when_nobody_is_armed(registry):
    lam = FakePeer("lambda")
    assert registry.lambda_arrived(lam, "fn", invocation(wait_ms=0), T0) is None
    assert lam.closed == (CloseCode.NOT_WAITING, "no debugger armed")
    assert registry.sessions("fn") == []


def test_invocation_without_wait_pairs_with_an_armed_debugger(registry):
    dbg, lam = FakePeer("debugger"), FakePeer("lambda")
    registry.debugger_arrived(dbg, "fn", T0)
    session = registry.lambda_arrived(lam, "fn", invocation(wait_ms=0), T0)
    assert session is not None and lam.closed is None
    assert isinstance(lam.sent[-1], Paired) and isinstance(dbg.sent[-1], Paired)


def test_paired_sessions_are_not_reaped_before_their_deadline(registry):
    session, lam, dbg = make_pair(registry)
    deadline_s = session.invocation.deadline_ms / 1000
    # Far longer than the pairing timeout and the wait: paired is paired.
    assert registry.reap(deadline_s - 1) == []
    assert registry.reap(deadline_s + registry.deadline_grace_s - 0.1) == []
    assert registry.reap(deadline_s + registry.deadline_grace_s) == [session]
    assert lam.closed == dbg.closed == (CloseCode.INVOCATION_DONE, "invocation deadline passed")


def test_announced_deadlines_and_waits_are_held_to_lambdas_longest_timeout(registry):
    # The Lambda token is semi-public: a client announcing a year-long wait
    # or deadline must not hold a session longer than any real invocation.
    lam, lam2 = FakePeer("lambda"), FakePeer("lambda2")
    year_ms = int((T0 + 365 * 86400) * 1000)
    waiting = registry.lambda_arrived(lam, "fn", invocation(deadline_ms=year_ms, wait_ms=year_ms), T0)
    assert waiting.to_dict()["deadline_ms"] == int((T0 + 900) * 1000)
    assert registry.reap(T0 + 899.9) == []
    assert registry.reap(T0 + 900) == [waiting]
    paired_session = registry.lambda_arrived(lam2, "fn", invocation(deadline_ms=year_ms), T0)
    registry.debugger_arrived(FakePeer("dbg"), "fn", T0)
    assert paired_session.state is SessionState.PAIRED
    registry.idle_timeout_s = 0
    assert registry.reap(T0 + 900 + registry.deadline_grace_s) == [paired_session]


def test_an_idle_debugger_is_closed_and_the_invocation_detached():
    registry = Registry(idle_timeout_s=60)
    session, lam, dbg = make_pair(registry)
    session.record_relayed(dbg, 10, T0 + 30)
    assert registry.reap(T0 + 89.9) == []
    assert registry.reap(T0 + 90) == [session]
    assert dbg.closed == (CloseCode.IDLE_TIMEOUT, "no debug traffic for 60 s; attach again to go on debugging")
    assert session.state is SessionState.DETACHED and lam.closed is None
    assert lam.sent[-1] == Detached(reason="debugger idle for 60 s")
    registry.peer_left(dbg, CloseCode.IDLE_TIMEOUT)  # its on_close: already detached
    assert session.state is SessionState.DETACHED


def test_idle_timeout_zero_never_closes():
    registry = Registry(idle_timeout_s=0)
    session, lam, dbg = make_pair(registry)
    assert registry.reap(T0 + 500) == []
    assert dbg.closed is None


def test_pairing_restarts_nothing_for_the_other_waiters(registry):
    d1, d2, lam = FakePeer("d1"), FakePeer("d2"), FakePeer("lambda")
    registry.debugger_arrived(d1, "fn", T0)
    registry.debugger_arrived(d2, "fn", T0 + 500)
    registry.lambda_arrived(lam, "fn", invocation(deadline_ms=int((T0 + 5000) * 1000)), T0 + 600)
    reaped = registry.reap(T0 + 900)
    assert reaped == []  # d1 is paired now; d2 has 400 s left
    assert [s.debugger_peer for s in registry.reap(T0 + 1400)] == [d2]


# Limits -------------------------------------------------------------------


def test_total_session_limit_refuses_new_sessions_only():
    registry = Registry(max_sessions=2, max_sessions_per_function=10)
    l1, l2, l3, dbg = FakePeer("l1"), FakePeer("l2"), FakePeer("l3"), FakePeer("d")
    registry.lambda_arrived(l1, "a", invocation("r1"), T0)
    registry.lambda_arrived(l2, "b", invocation("r2"), T0)
    assert registry.lambda_arrived(l3, "c", invocation("r3"), T0) is None
    code, reason = l3.closed
    assert code == CloseCode.TOO_MANY_SESSIONS
    assert "--max-sessions" in reason
    assert registry.session_of(l3) is None
    # Pairing with a waiting invocation creates no session: still allowed.
    assert registry.debugger_arrived(dbg, "a", T0).state is SessionState.PAIRED
    assert len(registry) == 2


def test_per_function_limit():
    registry = Registry(max_sessions=10, max_sessions_per_function=2)
    for i in range(2):
        assert registry.debugger_arrived(FakePeer("d%d" % i), "fn", T0) is not None
    refused = FakePeer("refused")
    assert registry.debugger_arrived(refused, "fn", T0) is None
    assert refused.closed[0] == CloseCode.TOO_MANY_SESSIONS
    assert "--max-sessions-per-function" in refused.closed[1]
    assert refused.sent == []
    assert registry.debugger_arrived(FakePeer("other"), "other-fn", T0) is not None


# Snapshot -----------------------------------------------------------------


def test_snapshot_and_byte_counts(registry):
    dbg = FakePeer("armed-debugger")
    registry.debugger_arrived(dbg, "armed-fn", T0)
    session, lam, paired_dbg = make_pair(registry, now=T0 + 1)
    waiting = FakePeer("waiting")
    registry.lambda_arrived(
        waiting, "fn", invocation("req-2", function_name="my-function", runtime="python3.12"), T0 + 2
    )
    session.record_relayed(lam, 100, T0 + 1)
    session.record_relayed(paired_dbg, 7, T0 + 1)
    session.record_relayed(lam, 1, T0 + 1)
    session.record_relayed(FakePeer("stranger"), 1000, T0 + 1)  # not in the session: ignored
    deadline_ms = invocation().deadline_ms
    assert registry.snapshot() == [
        {
            "function_id": "armed-fn",
            "state": "armed",
            "request_id": None,
            "deadline_ms": None,
            "function_name": None,
            "runtime": None,
            "since": T0,
            "bytes_to_debugger": 0,
            "bytes_to_lambda": 0,
            "attachments": 0,
            "when": None,
            "wait_ends_ms": None,
            "expires_ms": int((T0 + 900) * 1000),
        },
        {
            "function_id": "fn",
            "state": "paired",
            "request_id": "req-1",
            "deadline_ms": deadline_ms,
            "function_name": "",
            "runtime": "",
            "since": T0 + 1,
            "bytes_to_debugger": 101,
            "bytes_to_lambda": 7,
            "attachments": 1,
            "when": None,
            "wait_ends_ms": None,
            "expires_ms": None,
        },
        {
            "function_id": "fn",
            "state": "waiting",
            "request_id": "req-2",
            "deadline_ms": deadline_ms,
            "function_name": "my-function",
            "runtime": "python3.12",
            "since": T0 + 2,
            "bytes_to_debugger": 0,
            "bytes_to_lambda": 0,
            "attachments": 0,
            "when": None,
            "wait_ends_ms": int((T0 + 2) * 1000) + 60_000,  # the wait is shorter than the deadline
            "expires_ms": None,
        },
    ]


def test_since_is_when_the_state_began(registry):
    dbg, lam = FakePeer("d"), FakePeer("l")
    registry.debugger_arrived(dbg, "fn", T0)
    registry.lambda_arrived(lam, "fn", invocation(), T0 + 42)
    [entry] = registry.snapshot()
    assert entry["state"] == "paired"
    assert entry["since"] == T0 + 42


def test_sessions_print_with_function_and_request_id(registry):
    session = registry.lambda_arrived(FakePeer("l"), "my-fn", invocation("abc-123"), T0)
    assert repr(session) == str(session) == "Session[my-fn/abc-123]"
    assert str(Session("my-fn", SessionState.ARMED, T0)) == "Session[my-fn/-]"
