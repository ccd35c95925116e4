"""The bench runner: `python -m bench [experiment] [options]`.

Each experiment starts real processes on 127.0.0.1 through the launcher's own code,
writes raw results (CSV), the exact config, the git commit and a machine note into
bench/results/<experiment>-<time>/, draws its figures, and prints a summary. With no
experiment (or `all`) every experiment runs in turn into one bench/results/all-<time>/
folder, which `python -m writeup` turns into the report; one that fails is named and the
rest still run. `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import (autoscale, cache, core, durability, failover, harness, ratio, staleness,
                   sweep)
from pyromarket import config, process

# the longest measurement of one configuration: at an hour each, `python -m bench` takes days
MAX_DURATION_S = 3600.0
EXPERIMENTS = {"core": core, "cache": cache, "sweep": sweep, "ratio": ratio,
               "staleness": staleness, "durability": durability, "failover": failover,
               "autoscale": autoscale}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run pyromarket's benchmarks: all of them by default (about 26 minutes "
                    "on 2 cores), or one.\n\nexperiments:\n"
                    + "\n".join(f"  {name:<11} {mod.DESCRIPTION}" for name, mod in EXPERIMENTS.items()))
    parser.add_argument("experiment", nargs="?", default="all", choices=["all", *EXPERIMENTS],
                        help="one experiment, or all of them (the default)")
    parser.add_argument("--config", type=Path, default=harness.BASE_CONFIG,
                        help="the config every experiment's markets start from (each "
                             "experiment then sets its own peers, ports and settings); "
                             "default: conf/market.yaml")
    parser.add_argument("--quick", action="store_true", help="a smoke run of well under a minute "
                        "per experiment")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder root; default: bench/results")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions per configuration; default: each experiment's own")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of steady-state measurement per configuration")
    parser.add_argument("--ttl", type=float, default=0.5,
                        help="cache TTL in seconds for the cache experiment (the config default)")
    parser.add_argument("--stock", type=int, default=0,
                        help="initial stock per product for the cache experiment (0 = scarce)")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    if not (math.isfinite(args.duration) and 0 < args.duration <= MAX_DURATION_S):
        parser.error(f"--duration must be a number of seconds > 0 and at most "
                     f"{MAX_DURATION_S:.0f}")
    if not (math.isfinite(args.ttl) and 0 < args.ttl <= config.MAX_SECONDS):
        parser.error(f"--ttl must be a number of seconds > 0 and at most {config.MAX_SECONDS:.0f}")
    if args.stock < 0:
        parser.error("--stock must be >= 0")
    try:
        config.load(args.config)
    except config.ConfigError as exc:
        parser.error(str(exc))
    problem = _unwritable(args.out or harness.RESULTS)
    if problem:
        parser.error(f"--out {args.out or harness.RESULTS}: {problem}")
    harness.BASE_CONFIG = args.config.resolve()
    try:
        if args.experiment != "all":
            EXPERIMENTS[args.experiment].run(args)
            return 0
        return run_all(args)
    except KeyboardInterrupt:      # each experiment stops its processes in a `finally`...
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # ...bounded, so let the rest finish
        process.stop_leftovers()                        # what a second Ctrl-C cut short
        print("\nbench: interrupted; every process it started is stopped, and the experiment "
              "that was running wrote no results", file=sys.stderr)
        return 130
    except BrokenPipeError:        # stdout went away, as with `python -m bench | head`
        process.drop_stdout()
        process.stop_leftovers()
        with contextlib.suppress(OSError):
            print("bench: its output was closed; every process it started is stopped",
                  file=sys.stderr, flush=True)
        return 1


def _unwritable(root: Path) -> str | None:
    """Why results cannot be written under `root` (made if missing), or None if they can."""
    if root.exists() and not root.is_dir():
        return "exists and is not a folder"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot make the results folder ({exc.strerror or exc})"
    if not os.access(root, os.W_OK | os.X_OK):
        return "this user cannot write there"
    return None


def run_all(args) -> int:
    """Every experiment in turn into one folder. One that fails (a market that did not
    start, a load generator that died) is named, its traceback kept in the folder, and
    the rest still run; the exit status is then 1, since the report needs them all."""
    root = harness.results_dir("all", args.out)
    args.out = root
    timings, failed, started = {}, {}, time.monotonic()
    for name, module in EXPERIMENTS.items():
        print(f"\n=== {name}: {module.DESCRIPTION}", flush=True)
        t0 = time.monotonic()
        try:
            module.run(args)
        except BrokenPipeError:          # our own output is gone: main() stops everything
            raise
        except Exception as exc:         # noqa: BLE001 - named, kept, and the run goes on
            process.stop_leftovers()     # each experiment stops its own; this is a backstop
            failed[name] = _keep_failure(root, name, exc)
        timings[name] = round(time.monotonic() - t0, 1)
    harness.write_json(root / "manifest.json", {
        "experiments": list(EXPERIMENTS), "seconds": timings, "failed": failed,
        "total_s": round(time.monotonic() - started, 1), "quick": args.quick,
        "machine": harness.machine_note(root)})
    minutes = (time.monotonic() - started) / 60
    if failed:
        print(f"\n{len(failed)} of {len(EXPERIMENTS)} experiments failed ({', '.join(failed)}) "
              f"in {minutes:.1f} min; their tracebacks are in {root}; the report needs "
              f"every experiment", flush=True)
        return 1
    print(f"\nall experiments done in {minutes:.1f} min: {root}")
    print(f"build the report from them: python -m writeup --results {root}")
    return 0


def _keep_failure(root: Path, name: str, exc: Exception) -> str:
    """Write the traceback to <root>/<name>.failed.txt, say so on stderr in one line, and
    return the error in one line."""
    error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    path = root / f"{name}.failed.txt"
    path.write_text("".join(traceback.format_exception(exc)))
    print(f"bench: {name} failed ({error}); traceback in {path}; going on with the rest",
          file=sys.stderr, flush=True)
    return error


if __name__ == "__main__":
    sys.exit(main())
