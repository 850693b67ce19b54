"""The broker handshake of one invocation: dial the broker, announce the
invocation, wait for a debugger within the budget.

A failed connection trips a breaker: the container skips the broker for
``BROKER_RETRY_AFTER_S``, so a dead broker costs one connect timeout, not
one per invocation. Every way of ending without a debugger is one log line.
"""

import logging
import sys
import time
from typing import Any, Callable, Dict, Optional

from lambda_debugger.lambda_side.budget import WaitBudget
from lambda_debugger.lambda_side.config import LambdaConfig
from lambda_debugger.wire import filters, pairing, protocol
from lambda_debugger.wire.endpoints import WebSocketEndpoint, describe_close, describe_error, open_websocket
from lambda_debugger.wire.pairing import Waited

log = logging.getLogger("lambda_debugger")

#: After a failed connection to the broker, skip debugging for this long, so
#: a dead broker costs one connect timeout, not one per invocation.
BROKER_RETRY_AFTER_S = 10.0


class _Breaker:
    """Remembers a broker failure so the next invocations skip it a while."""

    until = 0.0

    def open(self) -> bool:
        return time.monotonic() < self.until

    def trip(self) -> None:
        self.until = time.monotonic() + BROKER_RETRY_AFTER_S


broker_breaker = _Breaker()


class Handshake:
    """Finds a debugger for one invocation.

    Attributes:
        broker: the broker connection once dialled, also after a wait that
            found nobody; the caller closes it.
    """

    def __init__(
        self,
        config: LambdaConfig,
        context: Any,
        request_id: str,
        name: str,
        *,
        on_notice: Optional[Callable] = None,
        matches: Optional[Dict[str, bool]] = None,
        event: Any = None,
    ):
        self.config = config
        self.matches = dict(matches or {})  # filter results already known
        self.event = event
        self.context = context
        self.request_id = request_id
        self.name = name  # how log lines name the session
        self.on_notice = on_notice
        self.broker: Optional[WebSocketEndpoint] = None

    def find_debugger(self, budget: WaitBudget) -> Optional[protocol.Paired]:
        """Dial the broker, announce the invocation and wait for ``paired``
        until the budget's ``wait_end``. None: no debugger (logged why)."""
        try:
            ws = open_websocket(
                self.config.broker_url,
                timeout=budget.connect_timeout(time.monotonic(), self.config.connect_timeout_s),
                header=protocol.bearer(self.config.auth_token),
                ca_file=self.config.ca_file,
            )
            self.broker = WebSocketEndpoint(ws, "broker", on_control=self.on_notice)
            self.broker.send_control(
                protocol.Invocation(
                    request_id=self.request_id,
                    deadline_ms=int(time.time() * 1000 + self.context.get_remaining_time_in_millis()),
                    function_name=getattr(self.context, "function_name", None) or "",
                    runtime="python%d.%d" % sys.version_info[:2],
                    wait_ms=budget.wait_ms,
                    matches=self.matches,
                )
            )
        except Exception as exc:
            broker_breaker.trip()
            log.warning(
                "%s: broker unreachable (%s); running normally, next try in %d s",
                self.name,
                describe_error(exc),
                BROKER_RETRY_AFTER_S,
            )
            return None
        if budget.wait_ms:
            log.info("%s: waiting up to %.1f s for a debugger", self.name, (budget.wait_end - time.monotonic()))
        while True:
            try:
                # With no wait budget the broker answers at once: paired with
                # a debugger already armed, or closed with NOT_WAITING.
                waited, message = pairing.wait_step(self.broker, budget.wait_end)
            except Exception as exc:
                log.warning("%s: broker connection failed (%s); running normally", self.name, describe_error(exc))
                return None
            if waited is Waited.TIMEOUT:
                timeout = max(0.0, min(1.0, budget.latest_start - time.monotonic()))
                self.broker.close(protocol.CloseCode.NOT_WAITING, "no debugger attached in time", timeout=timeout)
                log.info("%s: no debugger attached in time; running normally", self.name)
                return None
            if waited is Waited.SILENT:
                log.warning("%s: the broker went silent while waiting; running normally", self.name)
                return None
            if waited is Waited.CLOSED:
                code = self.broker.close_code
                if code in (protocol.CloseCode.UNAUTHORIZED, protocol.CloseCode.BAD_REQUEST):
                    broker_breaker.trip()  # retrying each invocation cannot help
                level = logging.INFO if code == protocol.CloseCode.NOT_WAITING else logging.WARNING
                log.log(
                    level,
                    "%s: broker closed the connection: %s; running normally",
                    self.name,
                    describe_close(code, self.broker.close_reason),
                )
                return None
            if isinstance(message, protocol.Consider):
                # A debugger with a filter armed while this invocation waits.
                try:
                    self.broker.send_control(self._considered(message.when))
                except Exception as exc:
                    log.warning("%s: broker connection failed (%s); running normally", self.name, describe_error(exc))
                    return None
                continue
            if isinstance(message, protocol.Paired):
                if message.when is not None:
                    log.info("%s: this event matches the debugger's filter %r", self.name, message.when[:200])
                return message

    def _considered(self, when: str) -> protocol.Considered:
        if when not in self.matches:
            self.matches[when] = filters.matches(when, self.event)
        return protocol.Considered(when=when, matches=self.matches[when])
