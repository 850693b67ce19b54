"""A TCP proxy that delays every byte, to stand in for a long network link.

Each direction of each connection is delivered ``--delay-ms`` after it was
received (plus up to ``--jitter-ms`` of random extra delay, never
reordering), at most at ``--mbit`` megabits per second when given. Both
sockets have Nagle off, so the delay is the link's, not TCP's.

It is a model of propagation delay and a bandwidth cap, not of TCP over a
long path: a real link also grows its congestion window slowly, so large
transfers over it are slower than here.

    python bench/delay_proxy.py --target 127.0.0.1:9229 --delay-ms 50 [--listen 0] [--jitter-ms 0] [--mbit 0]

Prints ``delay proxy listening on 127.0.0.1:<port>`` when ready.
"""

import argparse
import asyncio
import random
import socket
import subprocess
import sys
from typing import Optional

CHUNK_BYTES = 65536


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _carry(source, target, delay_s: float, jitter_s: float, bytes_per_s: float) -> None:
    """Move one direction, each chunk delivered ``delay_s`` (+ jitter) after
    it arrived, in order, no faster than ``bytes_per_s`` (0: unlimited)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def receive():
        try:
            while True:
                data = await loop.sock_recv(source, CHUNK_BYTES)
                if not data:
                    break
                # Acknowledge at once, as the far end would: a delayed ACK
                # here would hold back a sender's next small segment (Nagle).
                source.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                queue.put_nowait((loop.time() + delay_s + random.uniform(0, jitter_s), data))
        except OSError:
            pass
        queue.put_nowait((None, b""))

    receiving = asyncio.ensure_future(receive())
    last = free_at = 0.0
    try:
        while True:
            due, data = await queue.get()
            if due is None:
                break
            if bytes_per_s:
                free_at = max(due, free_at) + len(data) / bytes_per_s
                due = free_at
            last = due = max(due, last)  # jitter never reorders
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await loop.sock_sendall(target, data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        receiving.cancel()


async def _serve(listen_port: int, target, delay_s, jitter_s, bytes_per_s) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", listen_port))
    listener.setblocking(False)
    print("delay proxy listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)

    async def bridge(client):
        server = socket.socket()
        try:
            _tune(client)
            _tune(server)
            await loop.sock_connect(server, target)
            await asyncio.gather(
                _carry(client, server, delay_s, jitter_s, bytes_per_s),
                _carry(server, client, delay_s, jitter_s, bytes_per_s),
            )
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    tasks = set()
    while True:
        client, _ = await loop.sock_accept(listener)
        task = asyncio.ensure_future(bridge(client))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class DelayProxy:
    """This script as a child process, for the benchmarks: ``port`` is
    where to connect instead of ``target_port``."""

    def __init__(self, target_port: int, one_way_ms: float, *, jitter_ms: float = 0, mbit: float = 0):
        self.process: Optional[subprocess.Popen] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--target",
                "127.0.0.1:%d" % target_port,
                "--delay-ms",
                str(one_way_ms),
                "--jitter-ms",
                str(jitter_ms),
                "--mbit",
                str(mbit),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError("the delay proxy did not start: %r" % line)
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process.stdout.close()
            self.process = None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="random extra delay, up to this")
    parser.add_argument("--mbit", type=float, default=0.0, help="bandwidth cap per direction (0: none)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    try:
        asyncio.run(
            _serve(args.listen, (host, int(port)), args.delay_ms / 1000, args.jitter_ms / 1000, args.mbit * 125_000)
        )
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
