"""Loaded by a test function's interpreter (on its PYTHONPATH): a resolver
that hangs for host names ending in ``.slow-dns.test``, as a DNS server that
never answers would."""

import socket
import time

_getaddrinfo = socket.getaddrinfo


def _hanging_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".slow-dns.test"):
        time.sleep(60)
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _hanging_getaddrinfo
