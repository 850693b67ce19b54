"""The wire protocol between proxy, broker and attach bridge, without any I/O.

Both ends dial out to the broker over WebSocket. Two kinds of frames travel on
a connection:

* text frames carry control messages: one JSON object with a ``type`` field;
* binary frames carry the debug stream: opaque DAP bytes, relayed unchanged.
  A binary frame is not a DAP message; DAP framing lives in the byte stream.

Sessions end with a WebSocket close whose code (:class:`CloseCode`) and
reason say why. Reasons never carry secrets or stack traces.

This module is stdlib-only and imported by every process role.
"""

import enum
import json
import re
from dataclasses import MISSING, asdict, dataclass, fields
from dataclasses import field as default
from typing import Dict, List, Optional, Union

PROTOCOL_VERSION = 1

DEFAULT_LAMBDA_PORT = 8080
DEFAULT_DEBUGGER_PORT = 9229

LAMBDA_PATH_PREFIX = "/lambda/"
DEBUG_PATH_PREFIX = "/debug/"

#: Function IDs pair a Lambda with a debugger; they also appear in URL paths.
FUNCTION_ID_PATTERN = r"[A-Za-z0-9._-]{1,128}"
_FUNCTION_ID_RE = re.compile(FUNCTION_ID_PATTERN + r"\Z")

#: Close reasons must fit a control frame (125 bytes minus the 2-byte code).
MAX_CLOSE_REASON_BYTES = 123

#: Largest control message accepted, in bytes.
MAX_CONTROL_MESSAGE_BYTES = 16 * 1024

#: Longest ``--when`` expression a debugger may arm with, in characters.
MAX_WHEN_CHARS = 512

#: Most the distinct ``--when`` filters armed for one function ID may take,
#: as JSON: what a control connection's ``debuggers`` message carries.
MAX_FILTERS_BYTES = 8 * 1024


class ProtocolError(ValueError):
    """A control message or address that does not follow the protocol."""


class CloseCode(enum.IntEnum):
    """Why a WebSocket connection was closed. Private codes are 4000-4999."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the broker is shutting down
    PROTOCOL_ERROR = 1002
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011

    BAD_REQUEST = 4000  # malformed control message, path or function ID
    UNAUTHORIZED = 4001  # missing or wrong token for this port
    PEER_GONE = 4002  # the other side of the session left
    INVOCATION_DONE = 4003  # the handler finished; the session is over
    PAIRING_TIMEOUT = 4004  # nobody came to pair in time
    ALREADY_ATTACHED = 4005  # the invocation has a debugger already
    TOO_MANY_SESSIONS = 4006  # a session limit of the broker was reached
    IDLE_TIMEOUT = 4007  # no traffic for too long
    SLOW_PEER = 4008  # the peer stopped reading and its buffer is full
    NOT_WAITING = 4009  # the invocation stopped waiting before pairing


def valid_function_id(value: object) -> bool:
    """Return whether ``value`` is a usable function ID."""
    return isinstance(value, str) and bool(_FUNCTION_ID_RE.match(value))


def function_id_from_path(path: str, prefix: str) -> str:
    """Return the function ID of ``/lambda/<id>`` or ``/debug/<id>``.

    Raises:
        ProtocolError: the path does not start with ``prefix`` or the ID is
            not valid.
    """
    if not path.startswith(prefix):
        raise ProtocolError("path must start with " + prefix)
    function_id = path[len(prefix) :]
    if not valid_function_id(function_id):
        raise ProtocolError("function ID must match " + FUNCTION_ID_PATTERN)
    return function_id


def clip_reason(reason: str) -> str:
    """Shorten a close reason so that it fits a WebSocket close frame."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return data[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def bearer(token: Optional[str]) -> dict:
    """Return the HTTP header that presents ``token``, or no header."""
    return {"Authorization": "Bearer " + token} if token else {}


def token_from_header(value: Optional[str]) -> Optional[str]:
    """Return the token of an ``Authorization: Bearer`` header value."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def broker_url(address: str, default_port: int, path: str) -> str:
    """Build the WebSocket URL for ``path`` on a broker.

    Args:
        address: ``host``, ``host:port``, ``ws://host[:port]`` or
            ``wss://host[:port]`` (a trailing ``/`` is allowed).
        default_port: port used when ``address`` names none.
        path: absolute path such as ``/lambda/my-fn``.

    Raises:
        ProtocolError: ``address`` cannot be understood.
    """
    address = (address or "").strip()
    scheme = "ws"
    for prefix in ("ws://", "wss://", "http://", "https://"):
        if address.lower().startswith(prefix):
            scheme = "wss" if prefix in ("wss://", "https://") else "ws"
            address = address[len(prefix) :]
            break
    address = address.rstrip("/")
    if not address or "/" in address or "@" in address or " " in address:
        raise ProtocolError("broker address must be host, host:port, ws://host[:port] or wss://host[:port]")
    host, port = address, default_port
    if address.startswith("["):  # [ipv6]:port
        end = address.find("]")
        if end < 0:
            raise ProtocolError("unclosed '[' in broker address")
        host, rest = address[: end + 1], address[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ProtocolError("unexpected text after ']' in broker address")
            port = _port(rest[1:])
    elif address.count(":") == 1:
        host, port_text = address.split(":")
        port = _port(port_text)
    elif ":" in address:
        raise ProtocolError("write IPv6 broker addresses as [addr]:port")
    if not host:
        raise ProtocolError("broker address has no host")
    return "%s://%s:%d%s" % (scheme, host, port, path)


def _fits(value: object, kind: type, expected: object) -> bool:
    """Whether ``value`` is a ``kind``, or None where the field is Optional."""
    return isinstance(value, kind) or (value is None and expected != kind)


def _check_contents(message: "Message") -> None:
    """Check what the field types alone do not say."""
    if isinstance(message, Invocation) and message.matches is not None:
        if not all(isinstance(k, str) and isinstance(v, bool) for k, v in message.matches.items()):
            raise ProtocolError("invocation.matches must map filters to true or false")
    if isinstance(message, Debuggers):
        for entry in message.armed:
            if not (isinstance(entry, dict) and isinstance(entry.get("when"), (str, type(None)))):
                raise ProtocolError("debuggers.armed entries must be objects whose when is a string or null")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ProtocolError("broker port must be a number from 1 to 65535")
    return int(text)


# Control messages ---------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """Lambda -> broker: an invocation is waiting for a debugger.

    ``deadline_ms`` is the absolute Unix time in ms at which Lambda stops the
    invocation; ``wait_ms`` is how long the proxy will wait for a debugger.
    """

    request_id: str
    deadline_ms: int
    function_name: str = ""
    runtime: str = ""
    wait_ms: int = 0
    #: The ``--when`` filters of armed debuggers that the Lambda side
    #: evaluated against the event, and their results (this side sends the
    #: matches only). None: a Lambda side that cannot evaluate filters
    #: (older than them).
    matches: Optional[Dict[str, bool]] = None
    protocol: int = PROTOCOL_VERSION
    type: str = "invocation"


@dataclass(frozen=True)
class Armed:
    """Broker -> debugger: no invocation yet; waiting for the next one.

    ``expires_ms`` is the absolute Unix time in ms at which the broker stops
    waiting (0 when unknown).
    """

    function_id: str
    expires_ms: int = 0
    #: The debugger's ``--when`` filter as the broker took it; a bridge with
    #: a filter refuses a broker that does not echo it.
    when: Optional[str] = None
    type: str = "armed"


@dataclass(frozen=True)
class Paired:
    """Broker -> both sides: the session is paired; debug bytes may flow.

    The debugger side learns which invocation it is attached to.
    """

    function_id: str
    request_id: str
    deadline_ms: int
    function_name: str = ""
    runtime: str = ""
    #: 1 for the invocation's first debugger; more when a debugger attaches
    #: again after another left, while the handler runs on.
    attachment: int = 1
    #: The debugger's ``--when`` filter, echoed as in ``Armed``.
    when: Optional[str] = None
    type: str = "paired"


@dataclass(frozen=True)
class Detached:
    """The debugger of a paired session left while the handler runs on.

    Broker -> Lambda: the session waits for another debugger; stop relaying.
    Lambda -> broker, in answer: no byte of the old debug stream follows, so
    the broker may pair the invocation again. A proxy whose handler has not
    started closes the connection instead.
    """

    reason: str = ""
    type: str = "detached"


@dataclass(frozen=True)
class Ended:
    """Lambda -> broker -> debugger: the session is over, and why, in plain
    words; sent just before the Lambda side closes the connection.

    ``exit_code`` is the exit status of the handler's process where it has
    one (negative: killed by that signal), as debugpy reports a debuggee's.
    """

    message: str
    exit_code: Optional[int] = None
    type: str = "ended"


@dataclass(frozen=True)
class Notice:
    """Either direction: a human-readable line for the other side to show."""

    message: str
    type: str = "notice"


@dataclass(frozen=True)
class Watch:
    """Lambda -> broker, first message of a container's control connection:
    tell me which debuggers are armed for this function ID, now and whenever
    that changes. The connection carries nothing else from the Lambda side.
    """

    function_name: str = ""
    runtime: str = ""
    protocol: int = PROTOCOL_VERSION
    type: str = "watch"


@dataclass(frozen=True)
class Debuggers:
    """Broker -> Lambda on a control connection: the debuggers armed for the
    function ID, one ``{"id": n, "when": expr or null}`` per distinct filter
    (``id`` numbers the oldest debugger with it), oldest first.

    Sent at once, on every change, and again every ``heartbeat_s`` seconds,
    so that the container can tell a live connection from a stale one.
    """

    armed: List[dict] = default(default_factory=list)
    heartbeat_s: int = 20
    type: str = "debuggers"


@dataclass(frozen=True)
class Consider:
    """Broker -> Lambda, while an invocation waits: does your event match
    this debugger's ``--when`` filter? Answered with :class:`Considered`."""

    when: str
    type: str = "consider"


@dataclass(frozen=True)
class Considered:
    """Lambda -> broker: the result of a :class:`Consider`."""

    when: str
    matches: bool = False
    type: str = "considered"


Message = Union[Invocation, Armed, Paired, Detached, Ended, Notice, Watch, Debuggers, Consider, Considered]

_MESSAGE_TYPES = {
    cls.type: cls
    for cls in (Invocation, Armed, Paired, Detached, Ended, Notice, Watch, Debuggers, Consider, Considered)
}


def encode(message: Message) -> str:
    """Serialise a control message for a text frame."""
    return json.dumps(asdict(message), separators=(",", ":"), sort_keys=True)


def decode(text: Union[str, bytes]) -> Message:
    """Parse and validate one control message.

    Unknown fields are ignored so that newer peers can add some.

    Raises:
        ProtocolError: not JSON, not an object, unknown type, missing or
            mistyped fields, too large, or an unsupported protocol version.
    """
    if len(text) > MAX_CONTROL_MESSAGE_BYTES:
        raise ProtocolError("control message larger than %d bytes" % MAX_CONTROL_MESSAGE_BYTES)
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("control message is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("control message must be a JSON object")
    cls = _MESSAGE_TYPES.get(str(data.get("type")))
    if cls is None:
        raise ProtocolError("unknown control message type %r" % (str(data.get("type"))[:40],))
    values = {}
    for field in fields(cls):
        if field.name not in data:
            if field.default is MISSING:
                raise ProtocolError("%s message lacks %r" % (cls.type, field.name))
            continue
        value = data[field.name]
        expected = field.type
        # Compared by equality: typing may build Optional[int] anew once its
        # caches are cleared, and then it is no longer the same object.
        if expected == Optional[int] and value is None:
            pass
        elif (expected is int or expected == Optional[int]) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ProtocolError("%s.%s must be an integer" % (cls.type, field.name))
        if (expected is str or expected == Optional[str]) and not _fits(value, str, expected):
            raise ProtocolError("%s.%s must be a string" % (cls.type, field.name))
        if expected is bool and not isinstance(value, bool):
            raise ProtocolError("%s.%s must be true or false" % (cls.type, field.name))
        if expected == Optional[Dict[str, bool]] and not _fits(value, dict, expected):
            raise ProtocolError("%s.%s must be an object" % (cls.type, field.name))
        if expected == List[dict] and not isinstance(value, list):
            raise ProtocolError("%s.%s must be a list" % (cls.type, field.name))
        values[field.name] = value
    message = cls(**values)
    _check_contents(message)
    if isinstance(message, (Invocation, Watch)) and message.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            "protocol version %d is not supported (this side speaks %d)" % (message.protocol, PROTOCOL_VERSION)
        )
    return message
