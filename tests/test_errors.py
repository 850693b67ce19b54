"""Rebuilding the child's exception so that the runtime reports it unchanged."""

import signal
import traceback

import pytest

from lambda_debugger.lambda_side import errors
from lambda_debugger.lambda_side.child import RemoteError

pytestmark = pytest.mark.timeout(10)


class Picklable(Exception):
    pass


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__("%s/%s" % (a, b))


def raise_it(exc):
    def inner():
        raise exc

    inner()


def capture(exc):
    try:
        raise_it(exc)
    except Exception as caught:
        return RemoteError.capture(caught, caught.__traceback__), traceback.extract_tb(caught.__traceback__)


@pytest.mark.parametrize("original", [Picklable("boom"), NeedsTwoArgs(1, 2), KeyError("k")])
def test_rebuilt_exception_reads_like_the_original(original):
    remote, frames = capture(original)
    rebuilt = errors.rebuild(remote)
    assert type(rebuilt).__name__ == type(original).__name__
    assert str(rebuilt) == str(original)
    rebuilt_frames = traceback.extract_tb(rebuilt.__traceback__)
    assert [(f.filename, f.lineno, f.name, f.line) for f in rebuilt_frames] == [
        (f.filename, f.lineno, f.name, f.line) for f in frames
    ]


def test_picklable_exceptions_come_back_as_themselves():
    remote, _ = capture(Picklable("boom"))
    assert isinstance(errors.rebuild(remote), Picklable)


def test_unpicklable_exceptions_get_a_stand_in_with_the_same_name():
    remote, _ = capture(NeedsTwoArgs(1, 2))
    assert remote.pickled is None
    rebuilt = errors.rebuild(remote)
    assert not isinstance(rebuilt, NeedsTwoArgs) and type(rebuilt).__name__ == "NeedsTwoArgs"


@pytest.mark.parametrize(
    "exitcode, text",
    [
        (3, "exit status 3"),
        (0, "exit status 0"),
        (-signal.SIGKILL, "signal: killed"),
        (-signal.SIGSEGV, "signal: segmentation fault"),
        (-signal.SIGUSR1, "signal: user defined signal 1"),
    ],
)
def test_exit_errors_read_like_lambdas(exitcode, text):
    exc = errors.exit_error("req-1", exitcode)
    # awslambdaric's FaultException: the runtime reports it with no stack trace
    assert exc.exception_type == "Runtime.ExitError" and exc.trace is None
    assert exc.msg == "RequestId: req-1 Error: Runtime exited with error: " + text
