"""One structured log line per broker event, in logfmt.

``event=paired function_id=my-fn request_id=abc peer=10.0.0.7 waited_s=3.2``

Values are what the broker decided, never what a client sent as payload:
no tokens, no ``Authorization`` headers, no debug bytes. No handler is
installed here; ``main()`` configures logging for the command line only.
"""

import json
import logging

logger = logging.getLogger("broker_server")

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/[]@+,")

#: Longest value written as is; longer ones are cut so a log line stays a line.
_MAX_VALUE_CHARS = 200


def format_event(event: str, **fields) -> str:
    """Return ``event=<event> key=value ...``; ``None`` values are left out."""
    parts = ["event=" + event]
    for key, value in fields.items():
        if value is not None:
            parts.append("%s=%s" % (key, _format_value(value)))
    return " ".join(parts)


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "%.3f" % value
    text = str(getattr(value, "value", value))  # enums log their value
    if len(text) > _MAX_VALUE_CHARS:
        text = text[:_MAX_VALUE_CHARS] + "..."
    if text and all(char in _PLAIN for char in text):
        return text
    # Quoting with JSON escapes spaces, quotes and control characters, so a
    # client-chosen string cannot forge a second log line or field.
    return json.dumps(text)


def log_event(event: str, level: int = logging.INFO, **fields) -> None:
    """Log one event line on the ``broker_server`` logger."""
    if logger.isEnabledFor(level):
        logger.log(level, format_event(event, **fields))
