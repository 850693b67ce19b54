"""Time from the IDE connecting to ``stopped`` at a breakpoint on the
handler's first line, through bridge -> broker -> proxy -> child, for the
first invocation of a fresh container and for a second, warm one.

Baseline: a DAP client attaching directly to ``debugpy.listen`` (in-process
adapter) in a local process, measured the same way.

    python bench/attach_to_stopped.py [--rounds 5]
"""

import argparse
import statistics
import sys

from _chain import Chain, Direct, break_line, stopped_client
from _common import report

SOURCE = "def handler(event, context):\n    value = event.get('n', 0)  # BREAK\n    return {'n': value}\n"


def session(port, path, line):
    client, thread_id, _, elapsed = stopped_client(port, path, line)
    client.continue_(thread_id)
    client.close()
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cold, warm, direct = [], [], []
    for _ in range(args.rounds):
        baseline = Direct(SOURCE)
        port, finish = baseline.session()
        direct.append(session(port, baseline.path, break_line(SOURCE, baseline.line_offset)))
        finish()
        with Chain(SOURCE + "\nimport lambda_debugger\n") as chain:  # a fresh container each round
            for samples in (cold, warm):
                port, finish = chain.session({"n": 1})
                samples.append(session(port, chain.path, break_line(SOURCE)))
                finish()
    ms = lambda samples: statistics.median(samples) * 1000  # noqa: E731
    report(
        [
            ("connect -> stopped, first session (cold)", ms(cold), ms(direct)),
            ("connect -> stopped, second session (warm)", ms(warm), ms(direct)),
        ]
    )
    print("medians of %d rounds; baseline: DAP client straight to debugpy.listen" % args.rounds)


if __name__ == "__main__":
    sys.exit(main())
