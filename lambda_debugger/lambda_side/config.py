"""Settings of the Lambda side, read once from the environment.

Nothing else in the package reads ``os.environ`` for these values: build a
:class:`LambdaConfig` with :meth:`LambdaConfig.from_environ` and pass it on.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from lambda_debugger.wire import protocol

DEFAULT_WAIT_MAX_MS = 60000
LOG_LEVELS = ("debug", "info", "warning")

#: Whatever time the invocation had left when it arrived, the wait for a
#: debugger leaves the handler at least the larger of these two.
MIN_HANDLER_TIME_MS = 1000
MIN_HANDLER_TIME_FRACTION = 0.10


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


@dataclass(frozen=True)
class LambdaConfig:
    """How the proxy reaches the broker and how long it waits.

    Attributes:
        broker_url: ``ws://`` or ``wss://`` URL of ``/lambda/<function_id>``.
        function_id: pairs this function with a debugger.
        auth_token: the broker's Lambda-side token, or None.
        wait_max_ms: longest wait for a debugger per invocation.
        log_level: ``debug``, ``info`` or ``warning``.
        ca_file: PEM bundle that signs the broker's certificate (``wss://``
            with a private CA); None trusts the system's CAs.
        connect_timeout_s: longest TCP/TLS/WebSocket handshake with the broker.
    """

    broker_url: str
    function_id: str
    auth_token: Optional[str] = field(default=None, repr=False)  # kept out of reprs and error reports
    wait_max_ms: int = DEFAULT_WAIT_MAX_MS
    log_level: str = "info"
    ca_file: Optional[str] = None
    connect_timeout_s: float = 1.0

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "LambdaConfig":
        """Build the settings from ``DEBUGGER_*`` variables.

        Raises:
            ConfigError: a required variable is missing or a value is malformed.
        """
        environ = os.environ if environ is None else environ
        function_id = environ.get("DEBUGGER_FUNCTION_ID", "").strip()
        if not function_id:
            raise ConfigError("DEBUGGER_FUNCTION_ID is not set")
        if not protocol.valid_function_id(function_id):
            raise ConfigError(
                "DEBUGGER_FUNCTION_ID must match %s (1-128 letters, digits, '.', '_' or '-')"
                % protocol.FUNCTION_ID_PATTERN
            )
        address = environ.get("DEBUGGER_BROKER_ADDRESS", "").strip()
        if not address:
            raise ConfigError("DEBUGGER_BROKER_ADDRESS is not set")
        try:
            url = protocol.broker_url(address, protocol.DEFAULT_LAMBDA_PORT, protocol.LAMBDA_PATH_PREFIX + function_id)
        except protocol.ProtocolError as exc:
            raise ConfigError("DEBUGGER_BROKER_ADDRESS: %s" % exc) from None
        wait_text = environ.get("DEBUGGER_WAIT_MAX", "").strip()
        wait_max_ms = DEFAULT_WAIT_MAX_MS
        if wait_text:
            if not wait_text.isdigit():
                raise ConfigError("DEBUGGER_WAIT_MAX must be a whole number of milliseconds, not %r" % wait_text[:20])
            wait_max_ms = int(wait_text)
        log_level = environ.get("DEBUGGER_LOG_LEVEL", "").strip().lower() or "info"
        if log_level not in LOG_LEVELS:
            raise ConfigError("DEBUGGER_LOG_LEVEL must be one of %s" % ", ".join(LOG_LEVELS))
        token = environ.get("DEBUGGER_AUTH_TOKEN", "").strip() or None
        ca_file = environ.get("DEBUGGER_CA_FILE", "").strip() or None
        if ca_file and not os.path.isfile(ca_file):
            raise ConfigError("DEBUGGER_CA_FILE %s: no such file" % ca_file[:200])
        values: Dict[str, Any] = dict(
            broker_url=url,
            function_id=function_id,
            auth_token=token,
            wait_max_ms=wait_max_ms,
            log_level=log_level,
            ca_file=ca_file,
        )
        values.update(overrides)
        return cls(**values)


def wait_budget_ms(wait_max_ms: int, remaining_ms: int) -> int:
    """How long an invocation may wait for a debugger, in ms.

    The wait never takes more than ``wait_max_ms`` and always leaves the
    handler the larger of 1 s and 10 % of ``remaining_ms`` (the time the
    invocation had when it arrived). Returns 0 when no wait is possible.
    """
    return max(0, min(wait_max_ms, remaining_ms - handler_reserve_ms(remaining_ms)))


def handler_reserve_ms(remaining_ms: int) -> int:
    """The time the handler keeps whatever happens on the debug path: the
    larger of 1 s and 10 % of ``remaining_ms``."""
    return max(MIN_HANDLER_TIME_MS, int(remaining_ms * MIN_HANDLER_TIME_FRACTION))
