"""What every experiment needs: markets from the launcher's own code, load generators,
result folders (CSV + the exact config + git commit + a machine note) and progress.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

import yaml

from pyromarket import config, rpc
from pyromarket.market import Market
from pyromarket.process import Service, free_ports, python_module

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BASE_CONFIG = ROOT / "conf" / "market.yaml"     # what every experiment's markets start from


FOLDER_TIME = "%Y%m%d-%H%M%S"     # a results folder is <experiment>-<start time>
_NOTES: dict[Path, dict] = {}      # each results folder's machine note, taken as it is made


def results_dir(experiment: str, root: Path | None = None) -> Path:
    now = time.localtime()
    path = (root or RESULTS) / f"{experiment}-{time.strftime(FOLDER_TIME, now)}"
    path.mkdir(parents=True, exist_ok=True)
    _NOTES[path] = _note_now(now)
    return path


def machine_note(out: Path) -> dict:
    """The cores, load, versions, git commit and time as results folder `out` was made,
    i.e. as its experiment started (code committed mid-run does not count), and when it
    finished."""
    return {**_NOTES[out], "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def _note_now(now: time.struct_time) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except OSError:
        commit = "unknown"
    import Pyro5
    return {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(), "pyro5": Pyro5.__version__,
            "platform": platform.platform(), "git_commit": commit,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", now)}


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


class Progress:
    """A one-line progress bar on stderr: steps done, elapsed and estimated time left."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done = total, label, 0
        self.started = time.monotonic()
        self._draw()

    def step(self, note: str = "") -> None:
        self.done += 1
        self._draw(note)
        if self.done >= self.total:
            sys.stderr.write("\n")

    def _draw(self, note: str = "") -> None:
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        bar = "#" * int(30 * self.done / self.total) + "-" * (30 - int(30 * self.done / self.total))
        sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s elapsed, ~{left:4.0f}s left {note[:40]:40}")
        sys.stderr.flush()


# --- markets --------------------------------------------------------------------------------

def market_dict(workdir: Path, roles: list[str], n_traders: int, **sections) -> dict:
    """The base config (--config) with fresh ports, paths under `workdir`, and `sections`
    merged in."""
    data = yaml.safe_load(Path(BASE_CONFIG).read_text())
    ports = free_ports(2 + len(roles))
    data["nameserver"]["port"], data["warehouse"]["port"] = ports[0], ports[1]
    data["warehouse"]["db_path"] = str(workdir / "warehouse.sqlite3")
    data["logs"]["dir"] = str(workdir / "logs")
    data["peers"] = [{"id": i + 1, "role": r, "host": "127.0.0.1", "port": ports[2 + i]}
                     for i, r in enumerate(roles)]
    data["traders"]["count"] = n_traders
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return data


def start_market(workdir: Path, data: dict) -> Market:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "market.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = config.load(path)
    return Market(cfg, str(path), str(workdir / "run")).start()


# --- bare chain -----------------------------------------------------------------------------

def start_backend(workdir: Path) -> tuple[Service, str]:
    """A bare object that does nothing: the one-hop ceiling. Returns it and its URI."""
    [port] = free_ports(1)
    uri = f"PYRO:bench.backend@127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    backend = Service("backend", python_module("bench.chain", "backend", "--port", str(port)),
                      ready=lambda: _answers(uri), output_path=str(workdir / "backend.out"))
    return backend.start(), uri


def start_chain(workdir: Path) -> tuple[list[Service], str]:
    """A backend and a middle process; returns them and the middle's URI."""
    back_port, mid_port = free_ports(2)
    back_uri = f"PYRO:bench.backend@127.0.0.1:{back_port}"
    mid_uri = f"PYRO:bench.middle@127.0.0.1:{mid_port}"
    backend = Service("backend", python_module("bench.chain", "backend", "--port", str(back_port)),
                      ready=lambda: _answers(back_uri), output_path=str(workdir / "backend.out"))
    middle = Service("middle", python_module("bench.chain", "middle", "--port", str(mid_port),
                                             "--backend", back_uri),
                     ready=lambda: _answers(mid_uri), output_path=str(workdir / "middle.out"))
    workdir.mkdir(parents=True, exist_ok=True)
    return [backend.start(), middle.start()], mid_uri


def _answers(uri: str) -> bool:
    try:
        with rpc.proxy(uri, 1.0) as p:
            return bool(p.ping())
    except Exception:
        return False


# --- load -----------------------------------------------------------------------------------

def run_clients(uris: str | list[str] | None, n: int, warmup_s: float, duration_s: float,
                method: str = "buy", products: str = "salt", names: str | None = None) -> list[dict]:
    """n closed-loop client processes, spread round-robin over `uris`, or each picking a
    random registered trader per call from the name server at `names` (host:port)."""
    uris = [uris] if isinstance(uris, str) else uris
    start_at = time.time() + 1.0 + 0.15 * n          # time for every client to connect

    def argv(i: int) -> list[str]:
        target = ["--names", names] if names else ["--uri", uris[i % len(uris)]]
        return python_module("bench.loadgen", *target, "--method", method,
                             "--products", products, "--start-at", str(start_at),
                             "--warmup-s", str(warmup_s), "--duration-s", str(duration_s))
    procs = [subprocess.Popen(argv(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, cwd=ROOT) for i in range(n)]
    deadline = start_at + warmup_s + duration_s + 30
    try:
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            if p.returncode != 0:
                raise RuntimeError(f"load generator failed: {err.strip()[-500:]}")
            outs.append(json.loads(out))
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def aggregate(results: Iterable[dict], duration_s: float) -> dict:
    results = list(results)
    calls = sum(r["calls"] for r in results)
    outcomes: dict[str, int] = {}
    for r in results:
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    return {"calls": calls, "rate_per_s": round(calls / duration_s, 1),
            "shipped_per_s": round(outcomes.get("shipped", 0) / duration_s, 1),
            "p50_ms": max(r["p50_ms"] for r in results),
            "p90_ms": max(r.get("p90_ms", 0.0) for r in results),
            "p99_ms": max(r["p99_ms"] for r in results)}


def shown(value, spec: str = "") -> str:
    """A summary figure for the console: '-' when it is missing (None: not measured, or
    no repetition produced it), else formatted by `spec`, so a median that falls between
    two runs prints as 3.50, not 3.4995000000000003."""
    return "-" if value is None else format(value, spec)


def over_runs(reps: int) -> str:
    """What a summary's figures are taken over: 'medians of 3 runs', or 'one run'."""
    return "one run" if reps == 1 else f"medians of {reps} runs"
