"""The bench runner's smoke runs, so the benchmarks cannot rot unnoticed.
They check that each experiment runs end to end and writes its results, not speed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

from pyromarket.process import wait_until
from tests.integration.conftest import assert_all_gone, signals_as_in_a_terminal, hold_ctrl_c


def _quick(tmp_path, experiment: str):
    done = subprocess.run([sys.executable, "-m", "bench", experiment, "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    [folder] = list(tmp_path.glob(f"{experiment}-*"))
    with open(folder / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    return folder, rows, json.loads((folder / "meta.json").read_text())



@pytest.mark.parametrize("experiment,setups", [("core", {"chain", "real", "real-normal",
                                                         "chain-b"}),
                                               ("cache", {"one-hop", "sync", "cached"})])
def test_quick_run_writes_results(tmp_path, experiment, setups):
    """Runs the experiment's --quick form; checks the CSV and meta, not the speed."""
    _folder, rows, meta = _quick(tmp_path, experiment)
    assert {r["setup"] for r in rows} == setups
    assert all(float(r["rate_per_s"]) > 0 for r in rows)
    assert meta["machine"]["git_commit"] and meta["summary"]["per_clients"]
    # the note is taken as the folder is made (the run's start), not as the run ends
    assert meta["machine"]["started"] < meta["machine"]["finished"]
    assert _folder.name.endswith(meta["machine"]["started"][-8:].replace(":", ""))
    if experiment == "core":          # the paired ratios are ratios of this run's own rates
        for n, entry in meta["summary"]["per_clients"].items():
            rate = {r["setup"]: float(r["rate_per_s"]) for r in rows if r["clients"] == n}
            assert entry["paired_ratio"] == round(rate["real"] / rate["chain"], 3)
            aa = round(rate["chain-b"] / rate["chain"], 3)        # one rep: every A/A is the same
            assert entry["aa_paired_ratio"] == aa and entry["aa_paired_range"] == [aa, aa]
            # every real buy rode some warehouse call, and a call carries at least one order
            for setup in ("real", "real-normal"):
                assert entry["orders_per_call"][setup] >= 1
                assert entry["warehouse_call_ms"][setup] > 0


def test_bench_help_lists_the_experiments():
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    for name in ("core", "cache", "failover", "ratio", "autoscale"):
        assert name in done.stdout


@pytest.mark.parametrize("args", [["--reps", "0"], ["--duration", "-1"], ["--stock", "-5"],
                                  ["--ttl", "-0.5"], ["--config", "no/such.yaml"],
                                  ["--duration", "nan"], ["--duration", "inf"],
                                  ["--duration", "1e300"], ["--ttl", "nan"], ["--ttl", "0"]])
def test_bad_arguments_are_refused_before_anything_starts(tmp_path, args):
    done = subprocess.run([sys.executable, "-m", "bench", "core", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "error:" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_cannot_be_made_is_refused_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "results"):
        done = subprocess.run([sys.executable, "-m", "bench", "core", "--out", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and f"error: --out {out}: " in done.stderr
        assert "Traceback" not in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_ctrl_c_held_down_stops_every_process_and_says_so(tmp_path):
    """Ctrl-C as in a terminal (SIGINT at its default) in the middle of a run, sent every
    50 ms until bench exits, so some land while it stops its children."""
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "core", "--quick", "--out",
                                 str(tmp_path)], stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True,
                                preexec_fn=signals_as_in_a_terminal)
    try:
        wait_until(lambda: " 1/8 " in err_path.read_text(), 120, "the first measurement")
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
            kids = [int(k) for k in fh.read().split()]
        assert len(kids) >= 4                      # two chains, at least
        hold_ctrl_c(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 130
    assert "interrupted; every process it started is stopped" in err_path.read_text()
    assert "Traceback" not in err_path.read_text()
    assert_all_gone(kids)
    assert not list(tmp_path.glob("core-*/results.csv"))


def test_quick_failover_run_detects_the_kill(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "failover", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    [folder] = list(tmp_path.glob("failover-*"))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["summary"]["detection_s"] is not None and meta["summary"]["detection_s"] > 0
    assert meta["summary"]["before_per_s"] > 0 and meta["summary"]["after_per_s"] > 0
    assert (folder / "series.csv").exists()


def test_quick_ratio_run_draws_its_figure(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "ratio", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    [folder] = list(tmp_path.glob("ratio-*"))
    png = (folder / "selling_vs_ratio.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with open(folder / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["split"] for r in rows] == ["1:7", "4:4", "7:1"]
    assert all(float(r["buy_requests"]) > 0 for r in rows)


def test_quick_autoscale_run_adds_a_trader_that_serves(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "autoscale", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    [folder] = list(tmp_path.glob("autoscale-*"))
    summary = json.loads((folder / "meta.json").read_text())["summary"]
    assert summary["decided_s"] is not None and summary["launch_to_serving_s"] > 0
    assert summary["by_clients"]["2"]["traders_serving"] == 2
    assert (folder / "autoscale.png").read_bytes()[:4] == b"\x89PNG"


def test_running_all_runs_every_experiment_into_one_folder(tmp_path, monkeypatch):
    """`python -m bench` with no experiment: each experiment once, one manifest."""
    import bench.__main__ as runner
    ran = []

    class Fake:
        DESCRIPTION = "a stand-in"

        def __init__(self, name):
            self.name = name

        def run(self, args):
            ran.append((self.name, args.quick, args.out))

    monkeypatch.setattr(runner, "EXPERIMENTS", {n: Fake(n) for n in ("a", "b")})
    assert runner.main(["--quick", "--out", str(tmp_path)]) == 0
    [folder] = list(tmp_path.glob("all-*"))
    assert ran == [("a", True, folder), ("b", True, folder)]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["experiments"] == ["a", "b"] and set(manifest["seconds"]) == {"a", "b"}
    assert manifest["failed"] == {}


def test_one_failed_experiment_is_named_and_the_rest_still_run(tmp_path, monkeypatch, capsys):
    """A 26-minute `python -m bench` used to end in a traceback at the first experiment
    that failed, and ran none of the rest."""
    import bench.__main__ as runner
    ran = []

    class Fake:
        DESCRIPTION = "a stand-in"

        def __init__(self, name, fails=False):
            self.name, self.fails = name, fails

        def run(self, args):
            ran.append(self.name)
            if self.fails:
                raise RuntimeError("load generator failed: it could not connect\nmore lines")

    monkeypatch.setattr(runner, "EXPERIMENTS", {"a": Fake("a", fails=True), "b": Fake("b")})
    assert runner.main(["--quick", "--out", str(tmp_path)]) == 1
    assert ran == ["a", "b"]
    [folder] = list(tmp_path.glob("all-*"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["failed"] == {"a": "RuntimeError: load generator failed: it could not connect"}
    assert "more lines" in (folder / "a.failed.txt").read_text()
    out, err = capsys.readouterr()
    assert "bench: a failed (RuntimeError: load generator failed" in err
    assert "1 of 2 experiments failed (a)" in out and "python -m writeup" not in out


_PIPED_RUN = """
import sys, time
import bench.__main__ as runner
from pyromarket import process

class Talkative:                     # starts a child, then prints until stdout breaks
    DESCRIPTION = "a stand-in"
    def run(self, args):
        child = process.Service("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                                ready=lambda: True)
        child.start(10)
        print(f"child {child.pid}", flush=True)
        for i in range(10_000):
            print(f"line {i}", flush=True)
            time.sleep(0.01)

runner.EXPERIMENTS = {"a": Talkative(), "b": Talkative()}
sys.exit(runner.main(["--quick", "--out", sys.argv[1]]))
"""


def test_a_closed_output_stops_every_child_with_one_line(tmp_path):
    """`python -m bench | head`: the runner met its stdout closed and ended in a
    BrokenPipeError traceback."""
    with subprocess.Popen([sys.executable, "-c", _PIPED_RUN, str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline() == "\n" and proc.stdout.readline().startswith("=== a")
            child = int(proc.stdout.readline().split()[1])
            proc.stdout.close()                     # as `head` does once it has its lines
            err = proc.stderr.read()
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, err
    assert "bench: its output was closed; every process it started is stopped" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert_all_gone([child])


def test_quick_sweep_measures_both_modes(tmp_path):
    folder, rows, meta = _quick(tmp_path, "sweep")
    assert {(r["traders"], r["mode"]) for r in rows} == {(n, m) for n in ("1", "2")
                                                         for m in ("sync", "cached")}
    assert all(float(r["rate_per_s"]) > 0 and float(r["p99_ms"]) > 0 for r in rows)
    assert (folder / "sweep.png").exists() and meta["synchronous"] == "FULL"


def test_quick_staleness_grows_with_the_ttl(tmp_path):
    folder, rows, meta = _quick(tmp_path, "staleness")
    stale = {float(r["ttl_s"]): float(r["stale_pct"]) for r in rows}
    assert set(stale) == {0.1, 1.0} and 0 < stale[0.1] < stale[1.0]
    assert (folder / "staleness.png").exists()


def test_quick_durability_commits_one_order_per_commit_without_batching(tmp_path):
    folder, rows, meta = _quick(tmp_path, "durability")
    per_commit = {int(r["batch_max"]): float(r["orders_per_commit"]) for r in rows}
    assert per_commit[1] == 1.0 and per_commit[256] >= 1.0
    assert all(float(r["rate_per_s"]) > 0 for r in rows)
