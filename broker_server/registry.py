"""Pairing of Lambda invocations with debuggers: plain Python, no I/O.

The registry decides; the Tornado handlers only carry its decisions to the
network. Everything runs on one IOLoop, so there are no locks, and time is
passed in by the caller so that tests can play with it.

A session is one invocation, one debugger, or both:

* an invocation that arrives first is ``waiting`` for a debugger;
* a debugger that arrives first is ``armed`` for the next invocation;
* when the other side arrives the session is ``paired`` and bytes flow;
* when the debugger of a paired session leaves while the handler runs on,
  the session is ``detached``: the Lambda side is told (``Detached``) and,
  once it answers that the old debug stream has ended, the invocation may
  be paired with the next debugger of its function ID, as if waiting.

Waiting sides of one function ID are served oldest first. Many containers
may share a function ID (Lambda scales out); each invocation is its own
session with at most one debugger.

A debugger may arm with a ``--when`` filter: a JMESPath expression that the
Lambda side evaluates against the event. It pairs only with an invocation
whose results say the filter matched: sent with the invocation, or asked for
(``Consider``) while the invocation waits. An invocation whose Lambda side
cannot evaluate filters never pairs with a filtered debugger.

Warm containers may also keep a control connection ("watcher") per function
ID; the registry tells them which debuggers are armed, at once, on every
change and every ``heartbeat_s``, so that an invocation nobody wants runs
without asking the broker.
"""

import collections
import enum
import json
import logging
import time
from typing import Deque, Dict, List, Optional, Protocol, Set, Tuple

from lambda_debugger.wire.protocol import (
    MAX_FILTERS_BYTES,
    Armed,
    CloseCode,
    Consider,
    Debuggers,
    Detached,
    Invocation,
    Message,
    Paired,
)

from .logfmt import log_event, logger

#: Seconds added to an invocation's ``wait_ms`` before the broker gives up on
#: it: the proxy closes the connection itself when it stops waiting, so this
#: only catches proxies that vanished without a word (a frozen container).
WAIT_GRACE_S = 5.0

#: Seconds after an invocation's deadline before a paired session is ended.
#: By then Lambda has stopped the invocation; the margin covers clock skew.
DEADLINE_GRACE_S = 30.0

#: Lambda's longest timeout. No invocation runs longer, so the broker holds
#: none longer, whatever deadline or wait a client announces.
MAX_INVOCATION_S = 900.0

#: Seconds between the armed lists re-sent on control connections. A
#: container that heard nothing for three of these re-opens its connection.
HEARTBEAT_S = 20

#: How many ended invocations the broker remembers (for the web page).
RECENT_ENDED = 50

#: Most distinct ``--when`` filters armed at once for one function ID.
MAX_FILTERS = 32

#: A control connection is closed after this long and the container opens a
#: new one at its next invocation: this bounds what a container that vanished
#: without a word (frozen for good) costs the broker.
WATCHER_MAX_AGE_S = 3600.0


class SessionState(str, enum.Enum):
    """Where a session is in its life; the values appear in the API."""

    WAITING = "waiting"  # an invocation waits for a debugger
    ARMED = "armed"  # a debugger waits for an invocation
    PAIRED = "paired"  # both are here; debug bytes flow
    DETACHED = "detached"  # the debugger left; the handler runs; another may attach
    CLOSED = "closed"  # over; kept by nobody


class Side(str, enum.Enum):
    """Which end of a session a connection is."""

    LAMBDA = "lambda"
    DEBUGGER = "debugger"


class Peer(Protocol):
    """One connection as the registry sees it; the WebSocket handler is one."""

    #: Remote address for log lines.
    address: str

    def send_control(self, message: Message) -> None:
        """Queue a control message (a text frame) for the remote end."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a close code and a reason (no secrets)."""


class Session:
    """One invocation and its debugger, as far as they have arrived."""

    def __init__(self, function_id: str, state: SessionState, now: float) -> None:
        self.function_id = function_id
        self.state = state
        #: Unix time the session was created and entered its current state.
        self.created = now
        self.since = now
        self.lambda_peer: Optional[Peer] = None
        self.debugger_peer: Optional[Peer] = None
        #: What the Lambda announced; ``None`` while only a debugger is here.
        self.invocation: Optional[Invocation] = None
        #: The announced deadline (Unix ms), at most MAX_INVOCATION_S after
        #: arrival; ``None`` while only a debugger is here.
        self.deadline_ms: Optional[int] = None
        #: Unix time of the last debug bytes, or of the pairing.
        self.last_traffic = now
        #: Bytes relayed in each direction, as reported by the handlers.
        self.bytes_to_debugger = 0
        self.bytes_to_lambda = 0
        #: How many debuggers were paired with the invocation so far.
        self.attachments = 0
        #: Detached only: the Lambda side confirmed that no byte of the old
        #: debug stream follows, so a new debugger may be paired.
        self.stream_ended = False
        #: Bytes of the old debug stream dropped while detached.
        self.bytes_dropped = 0
        #: The debugger's ``--when`` filter, None for every invocation.
        self.when: Optional[str] = None
        #: The debugger's number on this broker, as control connections name it.
        self.debugger_number = 0
        #: The invocation's known filter results; None if its Lambda side
        #: cannot evaluate filters.
        self.matches: Optional[Dict[str, bool]] = None
        #: Filters the invocation was asked about and has not answered.
        self.considering: Set[str] = set()
        #: What the Lambda side said when the handler ended (``Ended``).
        self.ended_message: Optional[str] = None
        self.exit_code: Optional[int] = None
        #: The Lambda side vanished without closing (no close frame).
        self.lost = False

    @property
    def request_id(self) -> Optional[str]:
        return self.invocation.request_id if self.invocation else None

    def __repr__(self) -> str:
        return "Session[%s/%s]" % (self.function_id, self.request_id or "-")

    def side_of(self, peer: Peer) -> Optional[Side]:
        """Return which side ``peer`` is in this session, if any."""
        if peer is self.lambda_peer:
            return Side.LAMBDA
        if peer is self.debugger_peer:
            return Side.DEBUGGER
        return None

    def partner(self, peer: Peer) -> Optional[Peer]:
        """Return the other side of ``peer`` once paired, else ``None``."""
        if self.state is not SessionState.PAIRED:
            return None
        side = self.side_of(peer)
        if side is Side.LAMBDA:
            return self.debugger_peer
        if side is Side.DEBUGGER:
            return self.lambda_peer
        return None

    def record_relayed(self, sender: Peer, nbytes: int, now: float) -> None:
        """Count ``nbytes`` of debug stream that ``sender`` sent to its partner at ``now``."""
        self.last_traffic = now
        side = self.side_of(sender)
        if side is Side.LAMBDA:
            self.bytes_to_debugger += nbytes
        elif side is Side.DEBUGGER:
            self.bytes_to_lambda += nbytes

    def to_dict(self, pairing_timeout_s: float = 0.0) -> dict:
        """Return the plain-data view used by ``GET /api/sessions``.

        ``wait_ends_ms`` is when a waiting invocation stops waiting for a
        debugger, ``expires_ms`` when an armed debugger stops waiting for an
        invocation (given ``pairing_timeout_s``); both Unix ms, else None.
        """
        invocation = self.invocation
        wait_ends_ms = expires_ms = None
        if self.state is SessionState.WAITING and invocation is not None:
            wait_ends_ms = min(int(self.since * 1000) + invocation.wait_ms, self.deadline_ms)
        elif self.state is SessionState.ARMED and pairing_timeout_s:
            expires_ms = int((self.since + pairing_timeout_s) * 1000)
        return {
            "function_id": self.function_id,
            "state": self.state.value,
            "request_id": invocation.request_id if invocation else None,
            "deadline_ms": self.deadline_ms,
            "function_name": invocation.function_name if invocation else None,
            "runtime": invocation.runtime if invocation else None,
            "since": self.since,
            "bytes_to_debugger": self.bytes_to_debugger,
            "bytes_to_lambda": self.bytes_to_lambda,
            "attachments": self.attachments,
            "when": self.when,
            "wait_ends_ms": wait_ends_ms,
            "expires_ms": expires_ms,
        }

    def log_fields(self) -> dict:
        """Return the fields that name this session in log lines."""
        return {"function_id": self.function_id, "request_id": self.request_id}


class Registry:
    """All sessions of one broker, keyed by function ID.

    The handlers report arrivals and departures; the registry pairs, tells
    peers (``send_control``/``close``) and keeps the counts. Peer calls happen
    after the registry's own state is updated, so a peer that reports back
    from inside one of them finds a consistent registry.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 1000,
        max_sessions_per_function: int = 100,
        pairing_timeout_s: float = 900.0,
        idle_timeout_s: float = MAX_INVOCATION_S,
        wait_grace_s: float = WAIT_GRACE_S,
        deadline_grace_s: float = DEADLINE_GRACE_S,
        max_watchers: int = 20000,
        heartbeat_s: float = HEARTBEAT_S,
        watcher_max_age_s: float = WATCHER_MAX_AGE_S,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_sessions_per_function = max_sessions_per_function
        self.pairing_timeout_s = pairing_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.wait_grace_s = wait_grace_s
        self.deadline_grace_s = deadline_grace_s
        #: Sessions of each function ID in arrival order (oldest first).
        self._by_function: Dict[str, List[Session]] = {}
        self._by_peer: Dict[Peer, Session] = {}
        self._count = 0
        self.max_watchers = max_watchers
        self.heartbeat_s = heartbeat_s
        self.watcher_max_age_s = watcher_max_age_s
        #: Control connections of each function ID, with when they came.
        self._watchers: Dict[str, Dict[Peer, float]] = {}
        self._watched: Dict[Peer, str] = {}
        self._debuggers_armed = 0  # numbers armed debuggers
        self._last_heartbeat = 0.0
        #: The last invocations that ended, newest first, as plain data.
        self.recent: Deque[dict] = collections.deque(maxlen=RECENT_ENDED)

    @classmethod
    def from_config(cls, config) -> "Registry":
        """Build a registry with the limits of a :class:`BrokerConfig`."""
        return cls(
            max_sessions=config.max_sessions,
            max_sessions_per_function=config.max_sessions_per_function,
            pairing_timeout_s=config.pairing_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
            max_watchers=config.max_control_connections,
            heartbeat_s=config.control_heartbeat_s,
        )

    def __len__(self) -> int:
        return self._count

    def session_of(self, peer: Peer) -> Optional[Session]:
        """Return the session ``peer`` belongs to, if it is still open."""
        return self._by_peer.get(peer)

    def sessions(self, function_id: Optional[str] = None) -> List[Session]:
        """Return open sessions, oldest first, of one function ID or all."""
        if function_id is not None:
            return list(self._by_function.get(function_id, ()))
        return [s for group in self._by_function.values() for s in group]

    # Arrivals and departures ---------------------------------------------

    def lambda_arrived(self, peer: Peer, function_id: str, invocation: Invocation, now: float) -> Optional[Session]:
        """Register an invocation that announced itself.

        Pairs it with the oldest armed debugger of ``function_id``, or lets it
        wait. Returns its session, or ``None`` if it was closed: a limit
        refused it (``TOO_MANY_SESSIONS``) or it has no time to wait
        (``wait_ms`` 0) and no debugger is armed (``NOT_WAITING``).
        """
        self._check_new(peer)
        matches = dict(invocation.matches) if invocation.matches is not None else None
        session = self._armed_for(function_id, matches)
        if session is not None:
            self._add_invocation(session, peer, invocation, now)
            self._pair(session, now)
            return session
        if not invocation.wait_ms and not self._unasked_filters(function_id, matches):
            # A proxy with no time to wait pairs only with an armed debugger;
            # it learns at once that none is there. (One that has not
            # evaluated an armed debugger's filter is asked first: it waits
            # for the answer within its connect timeout.)
            self._call(peer, "close", CloseCode.NOT_WAITING, "no debugger armed")
            return None
        if not self._room_for(function_id, peer, Side.LAMBDA, invocation.request_id):
            return None
        session = self._add(function_id, SessionState.WAITING, now)
        self._add_invocation(session, peer, invocation, now)
        log_event(
            "lambda_waiting",
            peer=peer.address,
            function_name=invocation.function_name,
            wait_ms=invocation.wait_ms,
            deadline_ms=invocation.deadline_ms,
            **session.log_fields(),
        )
        self._ask_about_filters(session)
        return session

    def debugger_arrived(
        self, peer: Peer, function_id: str, now: float, when: Optional[str] = None
    ) -> Optional[Session]:
        """Register a debugger for ``function_id``, for the invocations its
        ``when`` filter matches (every invocation without one).

        Pairs it with the oldest waiting invocation it wants, or arms it and
        sends it ``Armed`` with the time the pairing timeout will end the
        wait; waiting invocations that have not evaluated its filter are
        asked to. Returns its session, or ``None`` if a limit refused it.
        """
        self._check_new(peer)
        session = self._next_invocation(function_id, when)
        if session is not None:
            session.debugger_peer = peer
            session.when = when
            self._by_peer[peer] = session
            self._pair(session, now)
            return session
        if not self._room_for(function_id, peer, Side.DEBUGGER, None) or not self._room_for_filter(
            function_id, peer, when
        ):
            return None
        session = self._add(function_id, SessionState.ARMED, now)
        session.debugger_peer = peer
        session.when = when
        self._debuggers_armed += 1
        session.debugger_number = self._debuggers_armed
        self._by_peer[peer] = session
        log_event("debugger_armed", peer=peer.address, when=when, **session.log_fields())
        expires_ms = int((now + self.pairing_timeout_s) * 1000)
        self._call(peer, "send_control", Armed(function_id=function_id, expires_ms=expires_ms, when=when))
        self._tell_watchers(function_id)
        if when is not None:
            for waiting in self._pairable(function_id):
                self._ask_about_filters(waiting)
        return session

    def lambda_considered(self, peer: Peer, when: str, matches: bool, now: float) -> None:
        """Record the Lambda side's answer to ``Consider``; pair the
        invocation with the oldest armed debugger that now wants it.
        Answers that come too late (the invocation was paired meanwhile)
        are dropped."""
        session = self._by_peer.get(peer)
        if session is None or session.side_of(peer) is not Side.LAMBDA or when not in session.considering:
            return  # not asked (only what was asked is kept), or asked before a pairing
        session.considering.discard(when)
        session.matches[when] = matches
        if not self._is_pairable(session):
            return
        armed = self._armed_for(session.function_id, session.matches) if matches else None
        if armed is not None:
            self._join(session, armed, now)
        elif session.state is SessionState.WAITING and not session.invocation.wait_ms and not session.considering:
            # It waited only for its answers, and no armed debugger wants it.
            self._end(session, CloseCode.NOT_WAITING, "no debugger armed for this event", now=now)

    # Control connections --------------------------------------------------

    def watcher_arrived(self, peer: Peer, function_id: str, now: float) -> bool:
        """Register a container's control connection and send it the armed
        debuggers. Returns False if the watcher limit refused it."""
        if len(self._watched) >= self.max_watchers:
            reason = "broker holds %d control connections, its limit" % self.max_watchers
            self._refuse(peer, Side.LAMBDA, function_id, reason, watchers=len(self._watched))
            return False
        self._watchers.setdefault(function_id, {})[peer] = now
        self._watched[peer] = function_id
        self._call(peer, "send_control", self._armed_message(function_id))
        return True

    def watcher_left(self, peer: Peer) -> None:
        """Forget a control connection that closed (unknown ones are ignored)."""
        function_id = self._watched.pop(peer, None)
        if function_id is None:
            return
        group = self._watchers.get(function_id, {})
        group.pop(peer, None)
        if not group:
            self._watchers.pop(function_id, None)

    def watcher_count(self, function_id: Optional[str] = None) -> int:
        """How many control connections are open, for one function ID or all."""
        if function_id is not None:
            return len(self._watchers.get(function_id, ()))
        return len(self._watched)

    def watchers_by_function(self) -> Dict[str, int]:
        """How many control connections each function ID has."""
        return {function_id: len(group) for function_id, group in sorted(self._watchers.items())}

    def heartbeat(self, now: float) -> None:
        """Every ``heartbeat_s``: re-send the armed debuggers on each control
        connection (no answer is expected: a frozen container cannot give
        one), and close the ones older than ``watcher_max_age_s``."""
        if now - self._last_heartbeat < self.heartbeat_s:
            return
        self._last_heartbeat = now
        for function_id, group in list(self._watchers.items()):
            message = self._armed_message(function_id)
            for peer, since in list(group.items()):
                if now - since >= self.watcher_max_age_s:
                    self.watcher_left(peer)
                    self._call(peer, "close", CloseCode.NORMAL, "control connection renewed after %d s" % (now - since))
                else:
                    self._call(peer, "send_control", message)

    def peer_left(self, peer: Peer, close_code: Optional[int] = None, now: Optional[float] = None) -> None:
        """Report that ``peer``'s connection closed; tell its partner.

        Args:
            peer: the connection that went away. Unknown peers are ignored, so
                calling this for connections the registry closed is harmless.
            close_code: the code the peer closed with, if any. A Lambda side
                that closes with ``INVOCATION_DONE`` ends the debugger's session
                with the same code; anything else is ``PEER_GONE``. A debugger
                that leaves, whatever its code, detaches the session.
            now: Unix time, for the detached session's age.
        """
        session = self._by_peer.get(peer)
        if session is None:
            return
        now = time.time() if now is None else now
        side = session.side_of(peer)
        if session.state is SessionState.DETACHED:
            self._end(session, None, "lambda side left while no debugger was attached", leaver=peer, now=now)
        elif session.state is not SessionState.PAIRED:
            # Nobody else to tell: the waiting side simply goes away.
            if side is Side.LAMBDA and close_code is None:
                session.lost = True  # no close frame: its sandbox was stopped or its network cut
            self._end(session, None, "%s side left before pairing" % side.value, leaver=peer, now=now)
        elif side is Side.LAMBDA and close_code == CloseCode.INVOCATION_DONE:
            self._end(session, CloseCode.INVOCATION_DONE, "invocation finished", leaver=peer, now=now)
        elif side is Side.LAMBDA:
            self._end(session, CloseCode.PEER_GONE, "lambda side disconnected", leaver=peer, now=now)
        else:
            self._detach(session, now)

    def lambda_detached(self, peer: Peer, now: float) -> bool:
        """Record the Lambda side's answer to ``Detached``: the old debug
        stream has ended, so the invocation may be paired again.

        Returns False when ``peer``'s session was not waiting for that answer
        (a protocol error of the caller).
        """
        session = self._by_peer.get(peer)
        if (
            session is None
            or session.side_of(peer) is not Side.LAMBDA
            or session.state is not SessionState.DETACHED
            or session.stream_ended
        ):
            return False
        session.stream_ended = True
        session.since = now
        log_event("reattachable", bytes_dropped=session.bytes_dropped, **session.log_fields())
        armed = self._armed_for(session.function_id, session.matches)
        if armed is not None:
            # A debugger that came while the old stream was ending armed
            # meanwhile; it takes this invocation, being the oldest one.
            self._join(session, armed, now)
        else:
            self._ask_about_filters(session)
        return True

    def drops_stream_of(self, peer: Peer) -> bool:
        """Whether debug bytes from ``peer`` are the old stream of a detached
        session, to be dropped rather than refused."""
        session = self._by_peer.get(peer)
        return (
            session is not None
            and session.state is SessionState.DETACHED
            and not session.stream_ended
            and session.side_of(peer) is Side.LAMBDA
        )

    # Housekeeping ---------------------------------------------------------

    def reap(self, now: float) -> List[Session]:
        """End sessions that waited too long, detach idle debuggers; return
        the sessions concerned.

        * armed debuggers older than ``pairing_timeout_s``: ``PAIRING_TIMEOUT``;
        * waiting invocations past ``wait_ms`` plus grace, or past their
          deadline: ``NOT_WAITING``;
        * paired and detached sessions well past the invocation's deadline
          (Lambda has stopped the invocation; the connection is a leftover):
          ``INVOCATION_DONE``;
        * a paired debugger without debug traffic for ``idle_timeout_s`` (0:
          never) is closed with ``IDLE_TIMEOUT``; the invocation runs on,
          detached, and may be attached again.
        """
        expired, idle = [], []
        for session in self.sessions():
            verdict = self._expiry(session, now)
            if verdict is not None:
                expired.append((session, verdict))
            elif (
                session.state is SessionState.PAIRED
                and self.idle_timeout_s
                and now - session.last_traffic >= self.idle_timeout_s
            ):
                idle.append(session)
        for session, (code, reason) in expired:
            log_event(
                "reaped",
                state=session.state,
                code=int(code),
                reason=reason,
                age_s=now - session.created,
                **session.log_fields(),
            )
            self._end(session, code, reason, now=now)
        for session in idle:
            debugger = session.debugger_peer
            reason = "no debug traffic for %d s; attach again to go on debugging" % self.idle_timeout_s
            log_event("idle_debugger", code=int(CloseCode.IDLE_TIMEOUT), reason=reason, **session.log_fields())
            self._detach(session, now, "debugger idle for %d s" % self.idle_timeout_s)
            self._call(debugger, "close", CloseCode.IDLE_TIMEOUT, reason)
        return [session for session, _ in expired] + idle

    def _expiry(self, session: Session, now: float) -> Optional[Tuple[CloseCode, str]]:
        invocation = session.invocation
        if session.state is SessionState.ARMED:
            if now - session.since >= self.pairing_timeout_s:
                return CloseCode.PAIRING_TIMEOUT, "no invocation arrived within %d s" % self.pairing_timeout_s
        elif session.state is SessionState.WAITING:
            if now * 1000 >= session.deadline_ms:
                return CloseCode.NOT_WAITING, "invocation deadline passed before a debugger came"
            if now - session.since >= min(invocation.wait_ms / 1000, MAX_INVOCATION_S) + self.wait_grace_s:
                return CloseCode.NOT_WAITING, "invocation stopped waiting for a debugger"
        elif session.state in (SessionState.PAIRED, SessionState.DETACHED):
            if now * 1000 >= session.deadline_ms + self.deadline_grace_s * 1000:
                return CloseCode.INVOCATION_DONE, "invocation deadline passed"
        return None

    def close_all(self, code: int, reason: str) -> None:
        """End every session, closing both sides, and close every control
        connection (the broker is going away)."""
        for session in self.sessions():
            self._end(session, code, reason)
        for peer in list(self._watched):
            self.watcher_left(peer)
            self._call(peer, "close", code, reason)

    def snapshot(self) -> List[dict]:
        """Return every open session as plain data, oldest first."""
        return [session.to_dict(self.pairing_timeout_s) for session in sorted(self.sessions(), key=lambda s: s.created)]

    def handler_ended(self, peer: Peer, message: str, exit_code: Optional[int]) -> None:
        """Keep what the Lambda side said when the handler ended, for the
        record of the session."""
        session = self._by_peer.get(peer)
        if session is not None and session.side_of(peer) is Side.LAMBDA:
            session.ended_message, session.exit_code = message[:300], exit_code

    def _remember(self, session: Session, code: Optional[int], reason: str, now: float) -> None:
        """Add an ended invocation to :attr:`recent`, with how it ended:
        ``debugged``, ``ran normally``, ``timed out``, ``crashed`` or
        ``lost`` (its Lambda side vanished without a word)."""
        invocation = session.invocation
        if invocation is None:
            return  # a debugger that left unpaired is no invocation's story
        if session.exit_code not in (None, 0):
            outcome, detail = "crashed", session.ended_message or "exit status %s" % session.exit_code
        elif session.deadline_ms is not None and now * 1000 >= session.deadline_ms and not session.ended_message:
            outcome, detail = "timed out", "the invocation reached its deadline"
        elif session.lost:
            outcome, detail = "lost", "its Lambda side went away without closing (sandbox stopped or network cut)"
        elif session.attachments:
            outcome, detail = "debugged", session.ended_message or reason
        else:
            outcome, detail = "ran normally", "no debugger attached; the handler ran without one"
        self.recent.appendleft(
            {
                "function_id": session.function_id,
                "request_id": invocation.request_id,
                "function_name": invocation.function_name,
                "runtime": invocation.runtime,
                "started": session.created,
                "ended": now,
                "outcome": outcome,
                "detail": detail,
                "code": int(code) if code is not None else None,
                "attachments": session.attachments,
                "bytes_to_debugger": session.bytes_to_debugger,
                "bytes_to_lambda": session.bytes_to_lambda,
            }
        )

    # Internals ------------------------------------------------------------

    def _check_new(self, peer: Peer) -> None:
        if peer in self._by_peer:
            raise ValueError("%r is already in %r" % (peer, self._by_peer[peer]))

    @staticmethod
    def _wants(when: Optional[str], matches: Optional[Dict[str, bool]]) -> bool:
        """Whether a debugger with filter ``when`` may take an invocation
        with filter results ``matches``: only on a known match."""
        return when is None or (matches is not None and matches.get(when) is True)

    def _armed_for(self, function_id: str, matches: Optional[Dict[str, bool]]) -> Optional[Session]:
        """The oldest armed debugger that wants an invocation with ``matches``."""
        for session in self._by_function.get(function_id, ()):
            if session.state is SessionState.ARMED and self._wants(session.when, matches):
                return session
        return None

    @staticmethod
    def _is_pairable(session: Session) -> bool:
        """Whether a debugger may attach to the invocation of ``session``
        now: waiting, or detached with its old debug stream ended."""
        return session.state is SessionState.WAITING or (
            session.state is SessionState.DETACHED and session.stream_ended
        )

    def _pairable(self, function_id: str) -> List[Session]:
        return [s for s in self._by_function.get(function_id, ()) if self._is_pairable(s)]

    def _next_invocation(self, function_id: str, when: Optional[str] = None) -> Optional[Session]:
        """The oldest invocation that a debugger with filter ``when`` may attach to."""
        for session in self._pairable(function_id):
            if self._wants(when, session.matches):
                return session
        return None

    def _unasked_filters(self, function_id: str, matches: Optional[Dict[str, bool]]) -> bool:
        """Whether an armed debugger's filter is one that an invocation
        with ``matches`` could evaluate and has not."""
        return matches is not None and any(
            s.state is SessionState.ARMED and s.when is not None and s.when not in matches
            for s in self._by_function.get(function_id, ())
        )

    def _room_for_filter(self, function_id: str, peer: Peer, when: Optional[str]) -> bool:
        """Check the limits on a function ID's distinct filters, which every
        control connection and invocation carries; refuse ``peer`` if full."""
        if when is None:
            return True
        filters = {s.when for s in self._by_function.get(function_id, ()) if s.state is SessionState.ARMED}
        filters.discard(None)
        if when in filters:
            return True
        filters.add(when)
        if len(filters) <= MAX_FILTERS and len(json.dumps(sorted(filters))) <= MAX_FILTERS_BYTES:
            return True
        reason = "the function ID has as many different --when filters armed as it may (%d, or %d KiB); " % (
            MAX_FILTERS,
            MAX_FILTERS_BYTES // 1024,
        )
        self._refuse(peer, Side.DEBUGGER, function_id, reason + "reuse one or end some")
        return False

    def _ask_about_filters(self, session: Session) -> None:
        """Ask a pairable invocation about the filters of armed debuggers
        that it has not evaluated (if its Lambda side can)."""
        if session.matches is None or session.lambda_peer is None:
            return
        for armed in self._by_function.get(session.function_id, ()):
            when = armed.when
            if (
                armed.state is SessionState.ARMED
                and when is not None
                and when not in session.matches
                and when not in session.considering
            ):
                session.considering.add(when)
                self._call(session.lambda_peer, "send_control", Consider(when=when))

    def _join(self, session: Session, armed: Session, now: float) -> None:
        """Pair the invocation of ``session`` with the debugger of ``armed``."""
        debugger, when = armed.debugger_peer, armed.when
        self._forget(armed)
        session.debugger_peer = debugger
        session.when = when
        self._by_peer[debugger] = session
        self._pair(session, now)

    def _armed_message(self, function_id: str) -> Debuggers:
        """The armed debuggers, one entry per distinct filter (the oldest
        debugger's number), so that the message stays within the filter
        limits however many debuggers share a filter."""
        armed, seen = [], set()
        for s in self._by_function.get(function_id, ()):
            if s.state is SessionState.ARMED and s.when not in seen:
                seen.add(s.when)
                armed.append({"id": s.debugger_number, "when": s.when})
        return Debuggers(armed=armed, heartbeat_s=max(1, round(self.heartbeat_s)))

    def _tell_watchers(self, function_id: str) -> None:
        """Send the armed debuggers of ``function_id`` to its control connections."""
        group = self._watchers.get(function_id)
        if group:
            message = self._armed_message(function_id)
            for peer in list(group):
                self._call(peer, "send_control", message)

    def _room_for(self, function_id: str, peer: Peer, side: Side, request_id: Optional[str]) -> bool:
        """Check the limits before a new session; refuse ``peer`` if full."""
        if self._count >= self.max_sessions:
            reason = "broker holds %d sessions, its limit; retry later or raise --max-sessions" % self.max_sessions
        elif len(self._by_function.get(function_id, ())) >= self.max_sessions_per_function:
            reason = (
                "function ID has %d sessions, the limit; end some or raise --max-sessions-per-function"
                % self.max_sessions_per_function
            )
        else:
            return True
        self._refuse(peer, side, function_id, reason, request_id=request_id, sessions=self._count)
        return False

    def _refuse(self, peer: Peer, side: Side, function_id: str, reason: str, **fields) -> None:
        """Close ``peer`` because a limit was hit, and log it."""
        log_event(
            "limit_hit",
            logging.WARNING,
            side=side,
            function_id=function_id,
            peer=peer.address,
            code=int(CloseCode.TOO_MANY_SESSIONS),
            reason=reason,
            **fields,
        )
        self._call(peer, "close", CloseCode.TOO_MANY_SESSIONS, reason)

    def _add_invocation(self, session: Session, peer: Peer, invocation: Invocation, now: float) -> None:
        session.lambda_peer = peer
        session.invocation = invocation
        latest_ms = int((now + MAX_INVOCATION_S) * 1000)
        session.deadline_ms = min(invocation.deadline_ms, latest_ms) if invocation.deadline_ms else latest_ms
        self._by_peer[peer] = session
        session.matches = dict(invocation.matches) if invocation.matches is not None else None

    def _add(self, function_id: str, state: SessionState, now: float) -> Session:
        session = Session(function_id, state, now)
        self._by_function.setdefault(function_id, []).append(session)
        self._count += 1
        return session

    def _pair(self, session: Session, now: float) -> None:
        waited = now - session.since
        was_armed = session.state is SessionState.ARMED
        session.state = SessionState.PAIRED
        session.considering.clear()
        session.since = session.last_traffic = now
        session.attachments += 1
        invocation = session.invocation
        message = Paired(
            function_id=session.function_id,
            request_id=invocation.request_id,
            deadline_ms=invocation.deadline_ms,
            function_name=invocation.function_name,
            runtime=invocation.runtime,
            attachment=session.attachments,
            when=session.when,
        )
        log_event(
            "paired",
            lambda_peer=session.lambda_peer.address,
            debugger_peer=session.debugger_peer.address,
            waited_s=waited,
            attachment=session.attachments,
            when=session.when,
            **session.log_fields(),
        )
        self._call(session.lambda_peer, "send_control", message)
        self._call(session.debugger_peer, "send_control", message)
        if was_armed:
            self._tell_watchers(session.function_id)

    def _detach(self, session: Session, now: float, reason: str = "debugger disconnected") -> None:
        """The debugger left a paired session: forget it and tell the Lambda
        side, which keeps its connection while the handler runs."""
        self._by_peer.pop(session.debugger_peer, None)
        session.debugger_peer = None
        session.when = None
        session.state = SessionState.DETACHED
        session.stream_ended = False
        session.since = now
        log_event(
            "debugger_detached",
            attachment=session.attachments,
            bytes_to_debugger=session.bytes_to_debugger,
            bytes_to_lambda=session.bytes_to_lambda,
            **session.log_fields(),
        )
        self._call(session.lambda_peer, "send_control", Detached(reason=reason))

    def _forget(self, session: Session) -> None:
        """Remove ``session`` and its peers from the indexes; mark it closed."""
        group = self._by_function.get(session.function_id, [])
        group.remove(session)
        if not group:
            del self._by_function[session.function_id]
        self._count -= 1
        for peer in (session.lambda_peer, session.debugger_peer):
            if peer is not None:
                self._by_peer.pop(peer, None)
        was_armed = session.state is SessionState.ARMED
        session.state = SessionState.CLOSED
        if was_armed:
            self._tell_watchers(session.function_id)

    def _end(
        self,
        session: Session,
        code: Optional[int],
        reason: str,
        leaver: Optional[Peer] = None,
        now: Optional[float] = None,
    ) -> None:
        """Forget ``session`` (remembering the invocation as ended at
        ``now``), then close its peers other than ``leaver``."""
        if session.state is SessionState.CLOSED:
            return
        peers = [p for p in (session.lambda_peer, session.debugger_peer) if p is not None]
        was_paired = session.state is SessionState.PAIRED
        self._forget(session)
        self._remember(session, code, reason, time.time() if now is None else now)
        log_event(
            "session_closed",
            code=int(code) if code is not None else None,
            reason=reason,
            was_paired=was_paired,
            bytes_to_debugger=session.bytes_to_debugger,
            bytes_to_lambda=session.bytes_to_lambda,
            **session.log_fields(),
        )
        if code is None:
            return
        for peer in peers:
            if peer is not leaver:
                self._call(peer, "close", code, reason)

    def _call(self, peer: Peer, method: str, *args) -> None:
        # One broken connection must not stop the registry from telling the
        # others, nor fail the callback of the connection that triggered this.
        try:
            getattr(peer, method)(*args)
        except Exception:
            logger.exception("event=peer_error method=%s peer=%s", method, getattr(peer, "address", "?"))
