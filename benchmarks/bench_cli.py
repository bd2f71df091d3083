"""Benchmark how fast the ``kiosk`` command starts: ``kiosk --help``, ``kiosk report --help``
and ``kiosk status`` against ``python -c "import click"`` (the floor for any click program).

Each command runs in a fresh interpreter ``--runs`` times (default 15); the median wall time
in milliseconds is printed with its ratio to the floor.  A Pi 3 is several times slower than
this machine, so the ratios matter more than the milliseconds.

    .venv/bin/python benchmarks/bench_cli.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import fill_sample_db


def median_ms(argv: list[str], runs: int) -> float:
    """Median wall time of ``argv`` over ``runs`` runs, in milliseconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    runs = ap.parse_args().runs
    py = sys.executable
    kiosk = [py, "-m", "kiosk"]
    with tempfile.TemporaryDirectory() as d:
        db = fill_sample_db(Path(d) / "counts.db", time.time() - 3600)
        cases = {
            'python -c "import click"': [py, "-c", "import click"],
            "kiosk --help": [*kiosk, "--help"],
            "kiosk report --help": [*kiosk, "report", "--help"],
            "kiosk status --db counts.db": [*kiosk, "status", "--db", str(db)],
        }
        floor = None
        print(f"median of {runs} runs each")
        print(f"{'command':<32} {'ms':>8} {'x floor':>8}")
        for name, argv in cases.items():
            ms = median_ms(argv, runs)
            floor = floor or ms
            print(f"{name:<32} {ms:8.0f} {ms / floor:8.2f}")


if __name__ == "__main__":
    main()
