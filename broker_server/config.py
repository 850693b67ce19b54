"""Broker settings: one frozen object, built at the edge from the environment.

Tokens come from the environment (``BROKER_LAMBDA_TOKEN``,
``BROKER_DEBUGGER_TOKEN``) or from files (:func:`read_token_file`), never
from command-line values, so that they never show up in ``ps`` output or
shell history; everything else is a keyword override, usually from the
command line.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from lambda_debugger.wire import tokens
from lambda_debugger.wire.protocol import (
    DEFAULT_DEBUGGER_PORT,
    DEFAULT_LAMBDA_PORT,
    MAX_CONTROL_MESSAGE_BYTES,
    ProtocolError,
    broker_url,
)

LAMBDA_TOKEN_VARIABLE = "BROKER_LAMBDA_TOKEN"
DEBUGGER_TOKEN_VARIABLE = "BROKER_DEBUGGER_TOKEN"


class ConfigError(ValueError):
    """Settings the broker cannot start with; the message says what to fix."""


def read_token_file(path: str, option: str) -> str:
    """The token stored in ``path``; see :func:`lambda_debugger.wire.tokens.read_token_file`.

    Raises:
        ConfigError: unreadable or empty file (the message never holds file contents).
    """
    try:
        return tokens.read_token_file(path, option)
    except tokens.TokenFileError as error:
        raise ConfigError(str(error)) from None


@dataclass(frozen=True)
class BrokerConfig:
    """Everything the broker needs to know, immutable once built."""

    host: str = "0.0.0.0"
    lambda_port: int = DEFAULT_LAMBDA_PORT
    debugger_port: int = DEFAULT_DEBUGGER_PORT
    #: What Lambdas present on the Lambda-facing port. Readable by anyone who
    #: can read the function's configuration, so it must never grant a debugger.
    lambda_token: Optional[str] = dataclasses.field(default=None, repr=False)
    #: What developers present on the debugger port (also guards UI and API).
    debugger_token: Optional[str] = dataclasses.field(default=None, repr=False)
    #: Accept connections without tokens (only where a token is not configured).
    insecure: bool = False
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    max_sessions: int = 1000
    max_sessions_per_function: int = 100
    #: Warm containers' control connections the broker keeps at most.
    max_control_connections: int = 20000
    #: Seconds between the armed debuggers re-sent on control connections;
    #: a container that hears nothing for three of these opens a new one.
    control_heartbeat_s: float = 20.0
    #: Largest WebSocket message accepted; larger ones are closed with 1009.
    max_frame_bytes: int = 1024 * 1024
    #: How long an armed debugger waits for an invocation.
    pairing_timeout_s: float = 900.0
    #: A paired debugger without debug traffic this long is closed (4007)
    #: and the invocation detached; 0 never. The default, Lambda's longest
    #: timeout, never cuts a real session short.
    idle_timeout_s: float = 900.0
    #: Time a Lambda has to send its ``Invocation`` after connecting.
    handshake_timeout_s: float = 10.0
    #: Seconds between WebSocket pings; 0 disables them.
    ping_interval_s: float = 10.0
    #: How this broker names itself in the APIs and on the page (a fleet
    #: has several); None: the host name and the Lambda port.
    name: Optional[str] = None
    #: The other brokers of a fleet (their debugger port's address): the
    #: page and ``/api/state`` show what they hold too.
    peers: Tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "BrokerConfig":
        """Build settings from ``environ`` (default ``os.environ``).

        Args:
            environ: where to read the tokens from.
            overrides: any field of this class; ``None`` values mean "keep the
                default" so that unset command-line options can be passed on.

        Raises:
            TypeError: an override names no field.
        """
        if environ is None:
            environ = os.environ
        values: Dict[str, Any] = {
            "lambda_token": environ.get(LAMBDA_TOKEN_VARIABLE) or None,
            "debugger_token": environ.get(DEBUGGER_TOKEN_VARIABLE) or None,
        }
        names = {field.name for field in dataclasses.fields(cls)}
        for name, value in overrides.items():
            if name not in names:
                raise TypeError("BrokerConfig has no setting %r" % name)
            if value is not None:
                values[name] = value
        return cls(**values)

    @property
    def ping_timeout_s(self) -> float:
        """Seconds to wait for a pong after a ping.

        Tornado (6.5+) refuses a timeout longer than the interval, so it is the
        interval itself: a silent peer is dropped within twice the interval.
        """
        return self.ping_interval_s

    @property
    def shared_port(self) -> bool:
        """Whether both sides are served on one port: for a broker behind a
        proxy (``deploy/nginx``) that keeps them apart."""
        return bool(self.lambda_port) and self.lambda_port == self.debugger_port

    @property
    def tls(self) -> bool:
        """Whether both ports speak TLS (``wss://``)."""
        return bool(self.certfile)

    def validate(self) -> "BrokerConfig":
        """Check that the broker can safely start with these settings.

        Returns:
            ``self``, so that calls can be chained.

        Raises:
            ConfigError: with a message that says what to change.
        """
        if not self.insecure:
            missing = [
                name
                for name, token in (
                    (LAMBDA_TOKEN_VARIABLE, self.lambda_token),
                    (DEBUGGER_TOKEN_VARIABLE, self.debugger_token),
                )
                if not token
            ]
            if missing:
                raise ConfigError(
                    "%s must be set: the broker needs a token for Lambdas and a different "
                    "one for debuggers (or run it with --insecure on a trusted network)" % " and ".join(missing)
                )
        if self.lambda_token and self.lambda_token == self.debugger_token:
            raise ConfigError(
                "%s and %s must differ: the Lambda token is readable from the function's "
                "configuration and must never let anyone attach a debugger"
                % (LAMBDA_TOKEN_VARIABLE, DEBUGGER_TOKEN_VARIABLE)
            )
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("--certfile and --keyfile go together: give both or neither")
        for option, path in (("--certfile", self.certfile), ("--keyfile", self.keyfile)):
            if path and not os.path.isfile(path):
                raise ConfigError("%s %s: no such file" % (option, path))
        for name in ("lambda_port", "debugger_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError("%s must be from 0 to 65535" % name.replace("_", " "))
        if self.name is not None and not (0 < len(self.name) <= 64 and self.name.isprintable()):
            raise ConfigError("the broker name must be 1 to 64 printable characters")
        for peer in self.peers:
            try:
                broker_url(peer, DEFAULT_DEBUGGER_PORT, "/")
            except ProtocolError as error:
                raise ConfigError("--peer %s: %s" % (peer[:100], error)) from None
        for name in ("max_sessions", "max_sessions_per_function", "max_control_connections"):
            if getattr(self, name) < 1:
                raise ConfigError("%s must be at least 1" % name.replace("_", " "))
        if self.max_frame_bytes < MAX_CONTROL_MESSAGE_BYTES:
            raise ConfigError("max frame bytes must be at least %d" % MAX_CONTROL_MESSAGE_BYTES)
        for name in ("pairing_timeout_s", "handshake_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError("%s must be positive" % name)
        if not 1 <= self.control_heartbeat_s <= 3600:
            raise ConfigError("control heartbeat must be from 1 to 3600 seconds")
        if self.ping_interval_s < 0:
            raise ConfigError("ping_interval_s must not be negative (0 disables pings)")
        if self.idle_timeout_s < 0:
            raise ConfigError("idle_timeout_s must not be negative (0 disables it)")
        return self
