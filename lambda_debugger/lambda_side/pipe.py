"""The messages on the ``multiprocessing.Pipe`` between the proxy and the
child, named in one place. AWS Lambda has no /dev/shm: a Pipe and a Process
are all the two processes share.

Child -> proxy, in this order:

* ``(READY, port)``: debugpy listens on 127.0.0.1:port, or
  ``(FAILED, reason)``: it could not start (the proxy runs the handler);
* ``(PUSHED, report)``: it applied the proxy's ``(PUSH, files, task_root)``
  (proxy -> child, always sent, ``files`` empty without a code push; see
  :mod:`lambda_debugger.lambda_side.pushed_code`), one report entry per file;
* ``(CONFIGURED,)``: the debugger finished configuring; the child then
  waits for the proxy's ``GO`` (proxy -> child) and runs the handler;
* then one of ``(RESULT, value)``, ``(RESULT_JSON, text)`` (a value that
  pickle cannot carry, already marshalled by the runtime's marshaller) or
  ``(ERROR, RemoteError)``.

A child that dies sends nothing more; the proxy sees its exit status.
"""

import enum


class PipeMessage(str, enum.Enum):
    """The first element of every message; equal to its plain string."""

    READY = "ready"
    FAILED = "failed"
    PUSH = "push"
    PUSHED = "pushed"
    CONFIGURED = "configured"
    GO = "go"
    RESULT = "result"
    RESULT_JSON = "result_json"
    ERROR = "error"
