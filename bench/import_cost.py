"""Cold-start cost of ``import lambda_debugger`` when inactive.

Imports the same handler module with and without the import line in fresh
interpreters, alternating, and compares the medians of the in-process import
time. Also lists any heavy module the inactive import loaded (there must be
none).

    python bench/import_cost.py [--runs 60]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import REPO, median_ms, report

HANDLER = "import json\n\ndef handler(event, context):\n    return {'ok': True}\n"
#: Modules the inactive import must not load; each must exist, or the check
#: would pass for nothing (checked in main()).
HEAVY = ("debugpy", "websocket", "tornado", "multiprocessing", "lambda_debugger.lambda_side.proxy")

PROBE = (
    "import sys, time, json\n"
    "t = time.perf_counter()\n"
    "import app\n"
    "elapsed = time.perf_counter() - t\n"
    "heavy = [m for m in %r if m in sys.modules]\n"
    "print(json.dumps([elapsed, heavy]))\n"
) % (HEAVY,)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    import importlib.util

    missing = [name for name in HEAVY if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit("import_cost.py: no module %s: the heavy-module check would pass for nothing" % ", ".join(missing))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBUGGER_")}
    env.update(PYTHONPATH=REPO, _HANDLER="app.handler", PYTHONDONTWRITEBYTECODE="")
    times = {"plain": [], "with import": []}
    heavy_seen = set()
    with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as debugged:
        with open(os.path.join(plain, "app.py"), "w") as f:
            f.write(HANDLER)
        with open(os.path.join(debugged, "app.py"), "w") as f:
            f.write(HANDLER + "\nimport lambda_debugger\n")
        for folder in (plain, debugged):  # compile the .pyc files once
            subprocess.run([sys.executable, "-c", PROBE], cwd=folder, env=env, check=True, capture_output=True)
        for _ in range(args.runs):
            for name, folder in (("plain", plain), ("with import", debugged)):
                out = subprocess.run(
                    [sys.executable, "-c", PROBE], cwd=folder, env=env, check=True, capture_output=True, text=True
                ).stdout
                elapsed, heavy = json.loads(out)
                times[name].append(elapsed)
                heavy_seen.update(heavy)
    plain_ms, debug_ms = median_ms(times["plain"]), median_ms(times["with import"])
    report([("import app (inactive lambda_debugger)", debug_ms, plain_ms)])
    print("added by the import: %.3f ms (median of %d runs each)" % (debug_ms - plain_ms, args.runs))
    print("heavy modules loaded: %s" % (sorted(heavy_seen) or "none"))


if __name__ == "__main__":
    main()
