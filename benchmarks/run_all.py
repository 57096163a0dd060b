#!/usr/bin/env python
"""`make bench`: run every benchmarks/bench_*.py in turn, each in its own process.

Uses the Python that runs this script (the virtualenv's, under ``make``).
Extra arguments are passed to every benchmark. Exits non-zero if any fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if not scripts:
        print("No benchmarks found.")
        return 1
    results = {}
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script), *sys.argv[1:]], cwd=HERE.parent)
        results[script.name] = (code, time.monotonic() - started)
    print("\n=== summary ===")
    for name, (code, seconds) in results.items():
        outcome = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name}: {outcome} in {seconds:.0f} s")
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
