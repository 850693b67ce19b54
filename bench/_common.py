"""Shared helpers of the benchmark scripts (run from the repository root)."""

import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def median_ms(samples):
    return statistics.median(samples) * 1000.0


def report(rows):
    """Print ``(name, value_ms, baseline_ms)`` rows with the ratio."""
    print("%-44s %12s %12s %8s" % ("figure", "chain (ms)", "base (ms)", "ratio"))
    for name, value, base in rows:
        ratio = "%.2f" % (value / base) if base else "-"
        print("%-44s %12.3f %12.3f %8s" % (name, value, base if base is not None else float("nan"), ratio))
