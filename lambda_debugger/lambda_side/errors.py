"""Rebuild the child's outcome as the exception the runtime expects.

The runtime reports an error as ``errorType`` (the exception class's
``__name__``), ``errorMessage`` (``str(exception)``) and the stack frames of
the traceback it catches. An exception cannot cross a process boundary with
its traceback, so the proxy re-raises an equal exception carrying a
traceback made of code objects compiled at the handler's files and lines:
the runtime formats it exactly as it would format the original.
"""

import pickle
import signal
from types import TracebackType
from typing import List, Optional

from lambda_debugger.lambda_side.child import RemoteError


def rebuild(remote: RemoteError) -> BaseException:
    """Return an exception equal to the child's, with the handler's frames.

    The original exception object is used when pickle carried it intact;
    otherwise a stand-in class with the same ``__name__`` and message.
    """
    exc = _unpickle(remote)
    if exc is None:
        exc = named_exception(remote.type_name, remote.message, remote.module)
    return exc.with_traceback(fake_traceback(remote.frames))


def exit_error(request_id: str, exitcode: Optional[int]) -> BaseException:
    """The ``Runtime.ExitError`` Lambda reports when the runtime process dies."""
    message = "RequestId: %s Error: Runtime exited with error: %s" % (request_id, describe_exit(exitcode))
    try:
        # The runtime reports its own faults with no stack trace, as Lambda
        # reports an exited runtime.
        from awslambdaric.lambda_runtime_exception import FaultException

        return FaultException("Runtime.ExitError", message, None)
    except ImportError:
        return named_exception("Runtime.ExitError", message, "lambda_debugger")


def describe_exit(exitcode: Optional[int]) -> str:
    """How Lambda words a process exit: ``exit status 3``, ``signal: killed``."""
    if exitcode is None or exitcode >= 0:
        return "exit status %s" % exitcode
    try:
        name = signal.strsignal(-exitcode)
    except ValueError:
        name = None
    return "signal: " + (name.lower() if name else str(-exitcode))


def named_exception(type_name: str, message: str, module: str = "builtins") -> BaseException:
    """An exception whose class is called ``type_name`` and whose str is ``message``."""
    cls = type(type_name, (Exception,), {"__module__": module, "__str__": lambda self: message})
    return cls(message)


def fake_traceback(frames):
    """Build a traceback whose entries read as ``frames``.

    Each entry comes from a tiny code object compiled with the frame's file
    name, placed at its line and renamed to its function, which raises a
    placeholder; the entries are then chained. Returns None for no frames.
    """
    entries: List[TracebackType] = []
    for filename, lineno, name, _line in frames:
        code = compile("\n" * (max(lineno or 1, 1) - 1) + "raise __exception__", filename, "exec")
        try:
            code = code.replace(co_name=name)
        except (AttributeError, ValueError):
            pass
        try:
            exec(code, {"__exception__": _Placeholder(), "__name__": "__lambda_debugger__"})
        except BaseException as raised:
            tb = raised.__traceback__
            if tb is not None and tb.tb_next is not None:
                entries.append(tb.tb_next)  # skip this function's frame
    for entry, following in zip(entries, entries[1:], strict=False):
        entry.tb_next = following
    return entries[0] if entries else None


class _Placeholder(Exception):
    """Raised only to obtain traceback entries."""


def _unpickle(remote: RemoteError) -> Optional[BaseException]:
    if remote.pickled is None:
        return None
    try:
        exc = pickle.loads(remote.pickled)
    except Exception:
        return None
    if type(exc).__name__ != remote.type_name or str(exc) != remote.message:
        return None
    return exc
