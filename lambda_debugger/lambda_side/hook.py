"""The import swap: replace the handler named by ``_HANDLER`` with the proxy.

Runs once, when the handler module's last line ``import lambda_debugger``
executes and ``DEBUGGER_ACTIVE`` is on. Every problem is one clear log line
and leaves the handler untouched: a debugging aid never breaks a function.
"""

import logging
import os
import sys
from typing import Mapping, Optional

from lambda_debugger.lambda_side.config import ConfigError, LambdaConfig

log = logging.getLogger("lambda_debugger")

#: The handler the layer's exec wrapper points the runtime at; that module
#: wraps the function's handler itself (see zero_code.py).
ZERO_CODE_HANDLER = "lambda_debugger.zero_code.handler"


def install(environ: Optional[Mapping[str, str]] = None, modules=None) -> bool:
    """Swap the handler for the proxy. Returns whether it was swapped."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    _set_log_level(environ)
    handler_name = environ.get("_HANDLER", "").strip()
    if not handler_name:
        log.debug("_HANDLER is not set (not running in Lambda); nothing to debug")
        return False
    if handler_name == ZERO_CODE_HANDLER:
        return False  # zero-code mode: lambda_debugger.zero_code wraps the handler
    module_name, _, function_name = handler_name.rpartition(".")
    module_name = module_name.replace("/", ".")
    if not module_name or not function_name:
        log.warning("lambda_debugger: cannot read _HANDLER=%r; expected module.function", handler_name[:200])
        return False
    module = modules.get(module_name)
    if module is None:
        log.warning(
            "lambda_debugger: imported before the handler module %r; put `import lambda_debugger` "
            "as the last line of %s.py",
            module_name,
            module_name.replace(".", "/"),
        )
        return False
    handler = getattr(module, function_name, None)
    if handler is None:
        log.warning(
            "lambda_debugger: %s.%s is not defined yet; move `import lambda_debugger` to the end "
            "of %s.py, after the handler",
            module_name,
            function_name,
            module_name.replace(".", "/"),
        )
        return False
    proxy = wrap(handler, "%s.%s" % (module_name, function_name), environ)
    if proxy is None:
        return False
    if proxy is not handler:
        setattr(module, function_name, proxy)
    return True


def wrap(handler, name: str, environ: Optional[Mapping[str, str]] = None):
    """Return the proxy for ``handler`` (``handler`` itself if it is one
    already), or None after one log line when it cannot be debugged."""
    environ = os.environ if environ is None else environ
    if getattr(handler, "lambda_debugger_config", None) is not None:
        return handler  # already swapped (module reloaded, or both modes at once)
    if not callable(handler):
        log.warning("lambda_debugger: %s is not callable; not debugging it", name)
        return None
    try:
        config = LambdaConfig.from_environ(environ)
    except ConfigError as exc:
        log.warning("lambda_debugger: %s; the function runs without the debugger", exc)
        return None
    from lambda_debugger.lambda_side.bootstrap import make_proxy

    log.info(
        "lambda_debugger: %s will wait up to %d ms per invocation for a debugger (function ID %s)",
        name,
        config.wait_max_ms,
        config.function_id,
    )
    return make_proxy(handler, config)


def _set_log_level(environ: Mapping[str, str]) -> None:
    # The runtime owns the root logger and its handlers; our records reach
    # them at our own level whatever the root's level is.
    level = environ.get("DEBUGGER_LOG_LEVEL", "").strip().upper() or "INFO"
    logging.getLogger("lambda_debugger").setLevel(level if level in ("DEBUG", "INFO", "WARNING") else "INFO")
