"""Debug a live AWS Lambda invocation from VS Code.

Add ``import lambda_debugger`` as the last line of the handler module. When
``DEBUGGER_ACTIVE`` is off this import does nothing else: the handler is
untouched and nothing heavy is loaded.
"""

import os as _os

__version__ = "0.1.0"


def active(environ) -> bool:
    """Whether ``DEBUGGER_ACTIVE`` turns debugging on."""
    return environ.get("DEBUGGER_ACTIVE", "").strip().lower() not in ("", "false", "0")


if active(_os.environ):
    try:
        from lambda_debugger.lambda_side import hook as _hook

        _hook.install()
    except Exception:  # never break the function's import
        import logging as _logging

        _logging.getLogger("lambda_debugger").exception("lambda_debugger: set-up failed; not debugging")
