"""The project's promises about itself: the README's commands, CI, the layout."""

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

from pyromarket.trader import STAT_KEYS

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    python -m pip install")]


def test_readme_has_two_quick_start_commands():
    cmds = _readme_commands()
    assert any("pyromarket.start" in c for c in cmds)
    assert any("pytest" in c for c in cmds)


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in _readme_commands() if "pytest" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines


def test_top_level_layout_matches_the_design_card():
    for name in ("README.md", "setup.cfg", "pyromarket", "nameserver", "conf", "tests",
                 "bench", "writeup"):
        assert (ROOT / name).exists(), name


def test_only_rpc_imports_pyro5():
    offenders = [p.name for p in (ROOT / "pyromarket").glob("*.py")
                 if p.name != "rpc.py" and "import Pyro5" in p.read_text()
                 or p.name != "rpc.py" and "from Pyro5" in p.read_text()]
    assert offenders == []


def test_every_module_says_what_it_owns():
    for p in (ROOT / "pyromarket").glob("*.py"):
        assert p.read_text().lstrip().startswith('"""'), p.name


def test_the_readme_repl_session_shows_every_trader_counter():
    """The README's `t.stats()` reply is pasted from a real run; a counter added since
    would be missing from it."""
    lines = (ROOT / "README.md").read_text().splitlines()
    reply = lines[lines.index(">>> t.stats()") + 1]
    shown = ast.literal_eval(reply)
    missing = {"trader", "peer", "mode", "epoch", "load_window", "scale_events",
               "warehouse_calls", "orders_per_warehouse_call", *STAT_KEYS} - shown.keys()
    assert missing == set()


def test_the_bench_runner_imports_no_plotting_library_until_it_draws():
    # `python -m bench --help` and a refused argument must not pay seaborn's import
    # (about 1.5 s here); bench.plots imports it with the first figure.
    heavy = ("seaborn", "pandas", "matplotlib")
    probe = ("import sys, bench.__main__; "
             f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def _lower_bounds() -> dict[str, tuple[int, ...]]:
    """{normalized name: lower bound} of every requirement in setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += [line for extra in cfg["options.extras_require"].values()
              for line in extra.splitlines()]
    out = {}
    for line in lines:
        req = line.split("#")[0].strip()
        if req:
            name, rest = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?(.*)", req).groups()
            bound = _version(re.search(r">=\s*([0-9.]+)", rest).group(1))
            assert out.setdefault(_normalized(name), bound) == bound, f"two bounds for {name}"
    return out


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_the_oldest_versions_file_pins_exactly_setup_cfgs_lower_bounds():
    """.ci/oldest.txt (pip constraints the suite was run against, see README "Tests")
    must name every requirement at the very version setup.cfg allows as its oldest."""
    pins = {}
    for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normalized(name)] = _version(version)
    assert pins == _lower_bounds()
