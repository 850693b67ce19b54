"""Zero-code mode: debug a function whose code does not import the package.

The layer's exec wrapper (``AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-debugger-wrapper``)
keeps the function's handler in ``LAMBDA_DEBUGGER_HANDLER`` and points the
runtime at :data:`handler` here. Importing this module restores ``_HANDLER``,
loads the original handler with the runtime's own loader (so a missing
module or function fails at init exactly as it would without the wrapper)
and, when ``DEBUGGER_ACTIVE`` is on and the settings are valid, wraps it in
the same proxy as ``import lambda_debugger`` does.
"""

import importlib
import logging
import os

from lambda_debugger.lambda_side.hook import ZERO_CODE_HANDLER as HANDLER_NAME

#: Where the exec wrapper keeps the function's own handler.
ORIGINAL_HANDLER_VARIABLE = "LAMBDA_DEBUGGER_HANDLER"

log = logging.getLogger("lambda_debugger")


def _runtime_loader():
    """The runtime's ``_get_handler``: awslambdaric's (Python 3.12+ runtimes,
    container images), else the managed runtime's ``bootstrap`` module."""
    try:
        from awslambdaric.bootstrap import _get_handler

        return _get_handler
    except Exception:
        pass
    try:
        from bootstrap import _get_handler

        return _get_handler
    except Exception:
        return _load


def _load(name: str):
    """Fallback loader with the runtime's rules: ``path/module.function``."""
    module_name, _, function_name = name.rpartition(".")
    if not module_name:
        raise ValueError("Bad handler '%s': expected module.function" % name)
    return getattr(importlib.import_module(module_name.replace("/", ".")), function_name)


def _original_handler():
    name = os.environ.get(ORIGINAL_HANDLER_VARIABLE, "").strip()
    if not name:
        raise RuntimeError(
            "%s is not set: use %s only through the lambda-debugger exec wrapper"
            % (ORIGINAL_HANDLER_VARIABLE, HANDLER_NAME)
        )
    # The function sees its own handler name, as without the wrapper.
    os.environ["_HANDLER"] = name
    return _runtime_loader()(name)


def _debuggable(original):
    from lambda_debugger import active
    from lambda_debugger.lambda_side import hook

    if not active(os.environ):
        return original
    try:
        return hook.wrap(original, os.environ["_HANDLER"]) or original
    except Exception:  # never break the function's init
        log.exception("lambda_debugger: set-up failed; not debugging")
        return original


handler = _debuggable(_original_handler())
