"""The import swap: replace the handler named by ``_HANDLER`` with the proxy.

Runs once, when the handler module's last line ``import lambda_debugger``
executes and ``DEBUGGER_ACTIVE`` is on. Every problem is one clear log line
and leaves the handler untouched: a debugging aid never breaks a function.
"""

import logging
import os
import sys
from typing import Mapping, Optional

from lambda_debugger.config import ConfigError, LambdaConfig

log = logging.getLogger("lambda_debugger")


def install(environ: Optional[Mapping[str, str]] = None, modules=None) -> bool:
    """Swap the handler for the proxy. Returns whether it was swapped."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    _set_log_level(environ)
    handler_name = environ.get("_HANDLER", "").strip()
    if not handler_name:
        log.debug("_HANDLER is not set (not running in Lambda); nothing to debug")
        return False
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
            module_name, module_name.replace(".", "/"),
        )
        return False
    handler = getattr(module, function_name, None)
    if handler is None:
        log.warning(
            "lambda_debugger: %s.%s is not defined yet; move `import lambda_debugger` to the end "
            "of %s.py, after the handler",
            module_name, function_name, module_name.replace(".", "/"),
        )
        return False
    if getattr(handler, "lambda_debugger_config", None) is not None:
        return True  # already swapped (module reloaded)
    if not callable(handler):
        log.warning("lambda_debugger: %s.%s is not callable; not debugging it", module_name, function_name)
        return False
    try:
        config = LambdaConfig.from_environ(environ)
    except ConfigError as exc:
        log.warning("lambda_debugger: %s; the function runs without the debugger", exc)
        return False
    from lambda_debugger.bootstrap import make_proxy

    setattr(module, function_name, make_proxy(handler, config))
    log.info(
        "lambda_debugger: %s.%s will wait up to %d ms per invocation for a debugger (function ID %s)",
        module_name, function_name, config.wait_max_ms, config.function_id,
    )
    return True


def _set_log_level(environ: Mapping[str, str]) -> None:
    # The runtime owns the root logger and its handlers; our records reach
    # them at our own level whatever the root's level is.
    level = environ.get("DEBUGGER_LOG_LEVEL", "").strip().upper() or "INFO"
    logging.getLogger("lambda_debugger").setLevel(level if level in ("DEBUG", "INFO", "WARNING") else "INFO")
