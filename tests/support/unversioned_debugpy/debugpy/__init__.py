"""A stand-in for a debugpy 1.8.6 copied in without its dist-info: the proxy
cannot tell its version unread, so the child reads ``__version__``."""

__version__ = "1.8.6"


def listen(*args, **kwargs):
    raise AssertionError("lambda-debugger started a debugpy it should have refused")
