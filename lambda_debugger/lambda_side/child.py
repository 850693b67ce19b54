"""The child process: the handler under debugpy, one invocation per child.

The proxy forks the child at the moment a debugger is paired, so the child
starts as an exact copy of the Lambda process (its own network connections
aside, see :func:`_isolate_connections`): the handler module's globals,
the runtime's logging set-up and log sink, ``_X_AMZN_TRACE_ID`` and the
invocation's real ``LambdaContext`` (whose ``get_remaining_time_in_millis()``
reads the absolute deadline, so it stays exact). Nothing of that has to be
rebuilt or pickled. Only results travel back, over a ``multiprocessing.Pipe``
(AWS Lambda has no /dev/shm, so no Queue, Lock or Manager).

The messages on the pipe are named in :mod:`lambda_debugger.lambda_side.pipe`.
"""

import io
import logging
import os
import pickle
import socket
import stat
import sys
import time
import traceback
from dataclasses import dataclass
from typing import List, Optional, Tuple

from lambda_debugger.lambda_side import versions
from lambda_debugger.lambda_side.pipe import PipeMessage

log = logging.getLogger("lambda_debugger.child")

Frame = Tuple[str, Optional[int], str, Optional[str]]


@dataclass
class RemoteError:
    """An exception raised by the handler in the child, ready to re-raise.

    Attributes:
        type_name / module: the exception class's ``__name__`` and module.
        message: ``str(exception)``, the runtime's ``errorMessage``.
        frames: the handler's traceback as (file, line, function, text).
        pickled: the exception itself when pickle can carry it, else None.
    """

    type_name: str
    module: str
    message: str
    frames: List[Frame]
    pickled: Optional[bytes] = None

    @classmethod
    def capture(cls, exc: BaseException, tb) -> "RemoteError":
        frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
        try:
            pickled = pickle.dumps(exc)
            pickle.loads(pickled)
        except Exception:
            pickled = None
        return cls(type(exc).__name__, type(exc).__module__, str(exc), frames, pickled)


class UnsupportedDebugpy(RuntimeError):
    """The imported debugpy is outside the range the package supports."""


def run(conn, handler, event, context, *, debug_logs: bool = False, close_fds=()) -> None:
    """Entry point of the forked child. Never returns an exception: every
    outcome is reported on ``conn`` or by the exit status."""
    for resource in close_fds:  # the parent's, not ours
        try:
            resource.close()
        except Exception:
            pass
    _isolate_connections()
    try:
        port = _start_debugpy(debug_logs)
    except UnsupportedDebugpy as exc:
        conn.send((PipeMessage.FAILED, str(exc)))
        return
    except Exception as exc:
        version = getattr(sys.modules.get("debugpy"), "__version__", "")
        conn.send(
            (
                PipeMessage.FAILED,
                "debugpy %scould not start: %s: %s" % (version + " " if version else "", type(exc).__name__, exc),
            )
        )
        return
    conn.send((PipeMessage.READY, port))
    import debugpy

    # Before debugpy reads the IDE's breakpoints (the proxy holds them until
    # PUSHED): they must bind in the pushed code.
    try:
        message = conn.recv()
    except (EOFError, OSError):  # the proxy gave up on this session
        return
    if not isinstance(message, tuple) or message[0] != PipeMessage.PUSH:
        return
    files, task_root = message[1], message[2]
    report = []
    if files:
        try:
            from lambda_debugger.lambda_side import pushed_code

            report = pushed_code.apply(files, task_root)
            handler = pushed_code.current_handler(handler, report)
        except Exception as exc:  # ours: the deployed code runs
            report = [
                {"path": f.path, "sha256": f.sha256, "status": "not applied", "message": "the push failed: %r" % exc}
                for f in files
            ]
    conn.send((PipeMessage.PUSHED, report))
    debugpy.wait_for_client()
    conn.send((PipeMessage.CONFIGURED,))
    try:
        if conn.recv() != PipeMessage.GO:
            return
    except (EOFError, OSError):  # the proxy gave up on this session
        return
    try:
        value = handler(event, context)
    except Exception as exc:
        # Drop this frame: the runtime would show only the handler's frames.
        tb = exc.__traceback__
        conn.send((PipeMessage.ERROR, RemoteError.capture(exc, tb.tb_next if tb else None)))
    else:
        _send_result(conn, value)
    # Exit now, as Lambda freezes a sandbox once the handler returned: no
    # waiting for debugpy's or the handler's threads, no atexit hooks (they
    # belong to the Lambda process, not to this copy of it).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    _drain_debugger()
    os._exit(0)


def _drain_debugger(timeout: float = 0.5) -> None:
    """Let debugpy send what it has queued (the handler's last output events)."""
    try:
        import pydevd

        queue = pydevd.get_global_debugger().writer._cmd_queue  # private: best effort
        deadline = time.monotonic() + timeout
        while not queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.005)  # the last command may still be in sendall
    except Exception:
        pass


def _send_result(conn, value) -> None:
    try:
        data = pickle.dumps((PipeMessage.RESULT, value))
        pickle.loads(data)  # some values pickle but cannot be rebuilt
    except Exception:
        data = None
    if data is not None:
        conn.send_bytes(data)
        return
    # A value pickle cannot carry: marshal it here exactly as the runtime
    # would, and let the proxy hand the JSON text over verbatim.
    try:
        from awslambdaric.lambda_runtime_marshaller import to_json

        conn.send((PipeMessage.RESULT_JSON, to_json(value)))
    except Exception as exc:
        fault = _marshal_fault(exc)
        conn.send((PipeMessage.ERROR, RemoteError.capture(fault, None)))


def _marshal_fault(exc: Exception) -> Exception:
    try:
        from awslambdaric.lambda_runtime_exception import FaultException

        return FaultException(FaultException.MARSHAL_ERROR, "Unable to marshal response: %s" % exc)
    except ImportError:
        return TypeError("Unable to marshal response: %s" % exc)


def _isolate_connections() -> None:
    """Give the child its own network connections.

    A forked child shares every open connection with the Lambda process: a
    pooled HTTPS or database connection used by both gets out of step (TLS
    record numbers, protocol state) and breaks the warm container. Each
    connected TCP socket the child inherited is swapped, in the child only,
    for an unconnected one, so clients made at init see a dropped
    connection and open a new one, as after a network blip. Unix sockets,
    pipes and datagram sockets are left alone.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return  # not Linux: nothing to inspect
    for fd in fds:
        if fd <= 2:
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                sock.getpeername()  # raises unless connected
                with socket.socket(sock.family, socket.SOCK_STREAM) as fresh:
                    os.dup2(fresh.fileno(), fd)
        except OSError:
            pass
        finally:
            sock.detach()


def _start_debugpy(debug_logs: bool) -> int:
    """Import debugpy and listen on a free loopback port; return the port.

    debugpy's own start-up warnings go to the function's log only when
    ``DEBUGGER_LOG_LEVEL=debug``.
    """
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    saved_stderr = sys.stderr
    if not debug_logs:
        sys.stderr = io.StringIO()
    try:
        import debugpy

        # Where no dist-info told the proxy the version, the module does.
        problem = versions.debugpy_problem(getattr(debugpy, "__version__", versions.UNKNOWN))
        if problem:
            raise UnsupportedDebugpy(problem)
        address = debugpy.listen(("127.0.0.1", 0), in_process_debug_adapter=True)
        port = address[1] if address else _listening_port()
        _hide_package_frames()
    finally:
        sys.stderr = saved_stderr
    return port


def _listening_port(timeout: float = 5.0) -> int:
    """The port pydevd bound for ``listen(("127.0.0.1", 0))``.

    debugpy before 1.8.22 returns nothing from an in-process ``listen``:
    pydevd binds on a thread of its own and records the address on its
    global debugger, which every version since in-process mode (1.6.4) has.

    Raises:
        RuntimeError: pydevd did not bind within ``timeout`` seconds.
    """
    import pydevd

    py_db = pydevd.get_global_debugger()
    if py_db is None or not py_db._server_socket_ready_event.wait(timeout) or not py_db._server_socket_name:
        raise RuntimeError("debugpy did not start listening within %.0f s" % timeout)
    return py_db._server_socket_name[1]


def _hide_package_frames() -> None:
    """Keep stepping inside the user's code: never stop in this package."""
    try:
        import debugpy
        import pydevd
        from _pydevd_bundle.pydevd_api import PyDevdAPI

        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # all of lambda_debugger
        debugpy_dir = os.path.dirname(os.path.abspath(debugpy.__file__))
        PyDevdAPI().set_dont_trace_start_end_patterns(
            pydevd.get_global_debugger(), (package_dir, debugpy_dir), ("debugpy_launcher.py",)
        )
    except Exception:  # a private API; stepping into us is only a nuisance
        log.debug("could not hide the package's frames from the debugger", exc_info=True)
