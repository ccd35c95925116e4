"""The bench runner: `python -m bench <experiment> [options]`.

Each experiment starts real processes on 127.0.0.1 through the launcher's own code,
writes raw results (CSV), the exact config, the git commit and a machine note into
bench/results/<experiment>-<time>/, and prints a summary. `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import autoscale, cache, core, failover, ratio

EXPERIMENTS = {"core": core, "cache": cache, "failover": failover, "ratio": ratio,
               "autoscale": autoscale}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run a pyromarket benchmark. Experiments: "
                    + "; ".join(f"{name}: {mod.DESCRIPTION}" for name, mod in EXPERIMENTS.items()))
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--quick", action="store_true", help="a smoke run of well under a minute")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder root; default: bench/results")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per configuration")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of steady-state measurement per configuration")
    parser.add_argument("--ttl", type=float, default=0.5,
                        help="cache TTL in seconds for the cache experiment (the config default)")
    parser.add_argument("--stock", type=int, default=0,
                        help="initial stock per product for the cache experiment (0 = scarce)")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.duration <= 0:
        parser.error("--reps must be >= 1 and --duration > 0")
    EXPERIMENTS[args.experiment].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
