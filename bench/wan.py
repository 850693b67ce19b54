"""Stepping over a long link: what a developer far from the broker waits for.

A delay proxy (``bench/delay_proxy.py``) sits between the attach bridge and
the broker (the developer's link, ``--rtt`` ms round trip) and, optionally,
between the broker and the Lambda side (``--lambda-rtt``). A DAP client asks,
after every stop, what an IDE asks:

* ``vscode``: ``threads``, then ``stackTrace`` of the top frame; then at once
  ``scopes`` -> ``variables`` of Locals, an ``evaluate`` per watch
  expression (two) and ``stackTrace`` of the next 19 frames;
* ``nvim``: ``threads``, ``stackTrace`` of every frame, ``scopes``, then the
  ``variables`` of every scope that is not expensive.

Figures per variant and link, median of the samples:

* continue -> line shown: ``continue`` until the IDE has the top frame of the
  next breakpoint hit;
* step -> line shown, step -> locals shown, step -> all answered: after ``next``;
* 5 MB evaluate: a 5 MB string in the ``clipboard`` context.

Variants, each run on the same link in the same run:

* ``direct``: the client through the same delay straight to
  ``debugpy.listen(in_process_debug_adapter=True)``, what an SSH tunnel to
  the debuggee gives (``adapter``: the same with debugpy's separate adapter
  process, which adds ~130 ms per stop on its own);
* ``no-prefetch``: the chain with ``attach --no-prefetch``;
* ``chain``: the chain as shipped.

    python bench/wan.py [--rtt 0,50,150] [--lambda-rtt 0] [--jitter-ms 0] [--mbit 0] [--steps 15]
                        [--continues 5] [--large 3] [--ides vscode,nvim] [--variants direct,no-prefetch,chain]
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import types

from _chain import Direct, break_line, debuggable_function
from delay_proxy import DelayProxy

from tests.support.chain import BridgeProcess, BrokerProcess
from tests.support.dap_client import DapClient, DapError

SOURCE = (
    "def handler(event, context):\n"
    "    total, items, label = 0, [], ''\n"
    "    for i in range(100000):\n"
    "        total += i  # BREAK\n"
    "        items.append(total)\n"
    "        label = 'step %d' % i\n"
    "    return {'total': total}\n"
)

WATCHES = ("total * 2", "len(items)")


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def ms(self):
        return (time.perf_counter() - self.start) * 1000.0


def after_stop(client, thread_id, ide, timer, marks):
    """Ask what ``ide`` asks after a stop; note when the line and the
    locals are shown and when everything is answered."""
    client.request("threads", timeout=30)
    if ide == "vscode":
        frames = client.request("stackTrace", {"threadId": thread_id, "startFrame": 0, "levels": 1}, timeout=30)
        marks["line"].append(timer.ms())
        frame_id = frames["stackFrames"][0]["id"]
        more = client.send_request("stackTrace", {"threadId": thread_id, "startFrame": 1, "levels": 19})
        watches = [
            client.send_request("evaluate", {"expression": w, "frameId": frame_id, "context": "watch"}) for w in WATCHES
        ]
        scopes = client.request("scopes", {"frameId": frame_id}, timeout=30)["scopes"]
        client.request("variables", {"variablesReference": scopes[0]["variablesReference"]}, timeout=30)
        marks["locals"].append(timer.ms())
        for seq in [more, *watches]:
            client.wait_response(seq, timeout=30)
    else:
        frames = client.request("stackTrace", {"threadId": thread_id, "startFrame": 0}, timeout=30)
        marks["line"].append(timer.ms())
        scopes = client.request("scopes", {"frameId": frames["stackFrames"][0]["id"]}, timeout=30)["scopes"]
        asked = [
            client.send_request("variables", {"variablesReference": s["variablesReference"]})
            for s in scopes
            if not s.get("expensive")
        ]
        for seq in asked:
            client.wait_response(seq, timeout=30)
        marks["locals"].append(timer.ms())
    marks["all"].append(timer.ms())


def measure(client, path, line, args):
    """Stop at ``path:line``, then continue, step and evaluate; return the
    samples by figure name."""
    client.attach_and_configure({path: [line]}, timeout=60)
    thread_id = client.wait_stopped(timeout=60)["threadId"]
    samples = {}
    for ide in args.ides:
        after_stop(client, thread_id, ide, Timer(), {"line": [], "locals": [], "all": []})  # warm up
        runs = {"continue": {"line": [], "locals": [], "all": []}, "step": {"line": [], "locals": [], "all": []}}
        for _ in range(args.continues):
            timer = Timer()
            client.request("continue", {"threadId": thread_id}, timeout=30)
            client.wait_stopped(timeout=30)
            after_stop(client, thread_id, ide, timer, runs["continue"])
        for _ in range(args.steps):
            timer = Timer()
            client.request("next", {"threadId": thread_id}, timeout=30)
            client.wait_stopped(timeout=30)
            after_stop(client, thread_id, ide, timer, runs["step"])
        samples["%s: continue -> line shown" % ide] = runs["continue"]["line"]
        samples["%s: step -> line shown" % ide] = runs["step"]["line"]
        samples["%s: step -> locals shown" % ide] = runs["step"]["locals"]
        samples["%s: step -> all answered" % ide] = runs["step"]["all"]
    frame_id = client.request("stackTrace", {"threadId": thread_id, "levels": 1}, timeout=30)["stackFrames"][0]["id"]
    big = []
    for _ in range(args.large):
        timer = Timer()
        result = client.request(
            "evaluate",
            {"expression": "'x' * (5 * 1024 * 1024)", "frameId": frame_id, "context": "clipboard"},
            timeout=120,
        )["result"]
        big.append(timer.ms())
        assert len(result) >= 5 * 1024 * 1024, len(result)
    samples["5 MB evaluate"] = big
    client.request(
        "setBreakpoints", {"source": {"path": path}, "breakpoints": [], "lines": [], "sourceModified": False}
    )
    client.request("continue", {"threadId": thread_id}, timeout=30)
    try:
        client.disconnect(timeout=30)
    except DapError:
        pass  # the handler may have returned already
    client.close()
    return samples


def run_direct(rtt_ms, args, in_process):
    direct = Direct(SOURCE, in_process=in_process)
    port, finish = direct.session()
    proxy = DelayProxy(port, rtt_ms / 2.0, jitter_ms=args.jitter_ms, mbit=args.mbit)
    try:
        client = DapClient.connect("127.0.0.1", proxy.port, timeout=30)
        samples = measure(client, direct.path, break_line(SOURCE, direct.line_offset), args)
        finish()
        return samples
    finally:
        proxy.stop()
        direct.stop()


class WanChain:
    """Broker, delay proxies and a warm Lambda runtime for one link."""

    def __init__(self, rtt_ms, lambda_rtt_ms, args):
        self.root = tempfile.mkdtemp()
        self.path = os.path.join(self.root, "app.py")
        with open(self.path, "w") as f:
            f.write(SOURCE + "\nimport lambda_debugger\n")
        self.devnull = open(os.devnull, "w")
        self.broker = BrokerProcess(os.path.join(self.root, "broker.log"))
        self.debugger_link = DelayProxy(
            self.broker.debugger_port, rtt_ms / 2.0, jitter_ms=args.jitter_ms, mbit=args.mbit
        )
        self.lambda_link = DelayProxy(self.broker.lambda_port, lambda_rtt_ms / 2.0)
        self.function = debuggable_function(
            self.root, self.lambda_link.port, "wan", self.devnull, timeout_s=600, wait_ms=60000
        )

    def run(self, bridge_args, args):
        # The bridge dials the broker through the developer's link.
        far_broker = types.SimpleNamespace(scheme="http", debugger_port=self.debugger_link.port)
        bridge = BridgeProcess(
            far_broker, os.path.join(self.root, "bridge.log"), function_id="wan", extra_args=bridge_args
        )
        result = {}
        invoking = threading.Thread(target=lambda: result.setdefault("r", self.function.invoke({})), daemon=True)
        try:
            bridge.wait_listening(30)
            invoking.start()
            self.broker.wait_for_state("waiting")
            client = DapClient.connect("127.0.0.1", bridge.port, timeout=30)
            samples = measure(client, self.path, break_line(SOURCE), args)
            invoking.join(120)
            assert result["r"].ok, result["r"].payload
            return samples
        finally:
            bridge.stop()

    def close(self):
        self.function.close()
        self.debugger_link.stop()
        self.lambda_link.stop()
        self.broker.stop()
        self.devnull.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt", default="0,50,150", help="round trips (ms) of the developer's link, comma-separated")
    parser.add_argument("--lambda-rtt", type=float, default=0.0, help="round trip (ms) between broker and Lambda")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="random extra one-way delay, up to this")
    parser.add_argument("--mbit", type=float, default=0.0, help="bandwidth cap of the developer's link (0: none)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--continues", type=int, default=5)
    parser.add_argument("--large", type=int, default=3)
    parser.add_argument("--ides", default="vscode,nvim")
    parser.add_argument("--variants", default="direct,no-prefetch,chain")
    args = parser.parse_args()
    args.ides = args.ides.split(",")
    variants = args.variants.split(",")
    table = {}
    for rtt in [float(r) for r in args.rtt.split(",")]:
        if "direct" in variants:
            table[(rtt, "direct")] = run_direct(rtt, args, in_process=True)
        if "adapter" in variants:
            table[(rtt, "adapter")] = run_direct(rtt, args, in_process=False)
        chain = WanChain(rtt, args.lambda_rtt, args)
        try:
            for variant, bridge_args in (("no-prefetch", ["--no-prefetch"]), ("chain", [])):
                if variant in variants:
                    table[(rtt, variant)] = chain.run(bridge_args, args)
        finally:
            chain.close()
        print_rtt(rtt, variants, table)
    print(
        "medians in ms; %d steps and %d continues per IDE, %d large results; broker <-> Lambda round trip %g ms;"
        " jitter %g ms, bandwidth cap %s"
        % (
            args.steps,
            args.continues,
            args.large,
            args.lambda_rtt,
            args.jitter_ms,
            "%g Mbit/s" % args.mbit if args.mbit else "none",
        )
    )


def print_rtt(rtt, variants, table):
    print("\n## %g ms round trip between bridge and broker\n" % rtt)
    header = "| figure | " + " | ".join(variants) + " |"
    if "chain" in variants:
        header += " chain / direct | chain / no-prefetch |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    names = list(table[(rtt, variants[0])])
    for name in names:
        medians = {v: statistics.median(table[(rtt, v)][name]) for v in variants}
        row = "| %s | " % name + " | ".join("%.1f" % medians[v] for v in variants) + " |"
        if "chain" in variants:
            row += " %s | %s |" % (
                "%.2f" % (medians["chain"] / medians["direct"]) if "direct" in medians else "-",
                "%.2f" % (medians["chain"] / medians["no-prefetch"]) if "no-prefetch" in medians else "-",
            )
        print(row, flush=True)


if __name__ == "__main__":
    sys.exit(main())
