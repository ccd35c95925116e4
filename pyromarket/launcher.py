"""How a new trader gets a machine: the `Launcher` interface and its two implementations.

The autoscaler (failover.py) decides *that* a trader `n` should start; a Launcher makes it
happen and returns a handle for the logs:

  * `LocalLauncher`, the default, starts `python -m pyromarket.replica --index n` on this
    machine, pinned to core (n-1) mod cores so each trader has a core of its own where
    there is one. The replica is not tied to the trader that launched it (a replacement
    must outlive a dying coordinator); a pid file under `<run dir>/replicas/` lets the
    market stop it, and the replica exits by itself if the market's launcher is gone.
  * `Ec2Launcher` runs an EC2 instance whose user-data installs the project and starts
    the same command against the market's name server (boto3: `pip install '.[aws]'`).

`stop(n)` stops what it started for trader n that still runs (a launch the autoscaler
gave up on must not turn up late beside its retry); `close()` stops all of it.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
from typing import Protocol

from . import config, runtime
from .errors import MarketError
from .process import alive, python_module, stop_pids

__all__ = ["Launcher", "LocalLauncher", "Ec2Launcher", "make_launcher", "user_data",
           "REPLICA_DIR", "replica_pids"]

REPLICA_DIR = "replicas"        # under the run dir: one `<pid>.pid` file per local replica


class Launcher(Protocol):
    """How a coordinator starts a new trader somewhere: the interface both launchers share."""

    def launch(self, index: int) -> str:
        """Start trader `index` somewhere; return a handle such as "pid 123" or an instance id."""

    def stop(self, index: int) -> None:
        """Stop whatever this launcher started for trader `index` that still runs."""

    def close(self) -> None:
        """Stop whatever this launcher started that still runs."""


class LocalLauncher:
    """Starts replicas as processes on this machine, each pinned to a core of its own and
    in its own session, with a pid file under the run folder so the market can stop them."""

    def __init__(self, config_path: str, run_dir: str, env: dict[str, str] | None = None):
        """`env`: the replicas' environment (default: this process's), e.g. to name the
        market launcher's pid for them to watch (replica.OWNER_ENV)."""
        self.config_path, self.run_dir = os.path.abspath(config_path), os.path.abspath(run_dir)
        self._env = env
        self._procs: list[tuple[int, subprocess.Popen]] = []     # (trader n, its process)

    def launch(self, index: int) -> str:
        """Start trader `index` (see `start`); returns "pid <n>" for the log."""
        return f"pid {self.start(index).pid}"

    def start(self, index: int) -> subprocess.Popen:
        """Start `python -m pyromarket.replica` for trader `index`, in its own session and
        pinned to its core, and write its pid file; returns its process."""
        argv = python_module("pyromarket.replica", "--config", self.config_path, "--run-dir",
                             self.run_dir, "--index", str(index),
                             "--core", str(runtime.trader_core(index)))
        os.makedirs(os.path.join(self.run_dir, REPLICA_DIR), exist_ok=True)
        with open(os.path.join(self.run_dir, f"replica-{index}.out"), "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=self._env)
        with open(os.path.join(self.run_dir, REPLICA_DIR, f"{proc.pid}.pid"), "w") as fh:
            fh.write(f"{index}\n")
        self._procs.append((index, proc))
        return proc

    def stop(self, index: int, grace_s: float = 3.0) -> None:
        self._stop([p for n, p in self._procs if n == index], grace_s)

    def close(self, grace_s: float = 3.0) -> None:
        self._stop([p for _, p in self._procs], grace_s)

    @staticmethod
    def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
        stop_pids([p.pid for p in procs if p.poll() is None], grace_s)
        for p in procs:
            p.wait(5.0)                      # reap them


def replica_pids(run_dir: str) -> list[int]:
    """Pids of local replicas started for this run that are still alive."""
    folder = os.path.join(run_dir, REPLICA_DIR)
    if not os.path.isdir(folder):
        return []
    pids = [int(name[:-4]) for name in os.listdir(folder) if name.endswith(".pid")
            and name[:-4].isdigit()]
    return [pid for pid in pids if alive(pid, expect=b"pyromarket.replica")]


def user_data(index: int, config_text: str, package: str) -> str:
    """The instance's boot script: install the project, write the config, run the trader."""
    cfg_b64 = base64.b64encode(config_text.encode()).decode()
    return "\n".join([
        "#!/bin/bash",
        "# pyromarket trader replica: installs the project and serves market.trader."
        f"{index}",
        "set -euo pipefail",
        "python3 -m venv /opt/pyromarket",
        f"/opt/pyromarket/bin/pip install {shlex.quote(package)}",
        "mkdir -p /etc/pyromarket /var/log/pyromarket",
        f"echo {cfg_b64} | base64 -d > /etc/pyromarket/market.yaml",
        "HOST=$(hostname -I | awk '{print $1}')",
        "exec /opt/pyromarket/bin/python -m pyromarket.replica --config /etc/pyromarket/market.yaml"
        f" --run-dir /var/log/pyromarket --index {index} --host \"$HOST\"",
        "",
    ])


class Ec2Launcher:
    """Starts each replica on an EC2 instance whose user-data installs the project and
    runs `pyromarket.replica` against the market's name server; close() terminates them."""
    TAG = "pyromarket:trader"

    def __init__(self, ec2: config.Ec2Config, config_text: str, client=None):
        self.ec2, self.config_text = ec2, config_text
        self.instances: list[str] = []
        self._index: dict[str, int] = {}     # instance id -> the trader n it serves
        self._client = client or _boto3_client(ec2)

    def launch(self, index: int) -> str:
        """Run one instance whose user-data starts trader `index`; returns its id."""
        e = self.ec2
        args = {"ImageId": e.image_id, "InstanceType": e.instance_type, "MinCount": 1,
                "MaxCount": 1, "UserData": user_data(index, self.config_text, e.package),
                "InstanceInitiatedShutdownBehavior": "terminate",
                "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                    {"Key": "Name", "Value": f"pyromarket-trader-{index}"},
                    {"Key": self.TAG, "Value": str(index)}]}]}
        if e.subnet_id:
            args["SubnetId"] = e.subnet_id
        if e.security_group_ids:
            args["SecurityGroupIds"] = list(e.security_group_ids)
        if e.key_name:
            args["KeyName"] = e.key_name
        instance = self._client.run_instances(**args)["Instances"][0]["InstanceId"]
        self.instances.append(instance)
        self._index[instance] = index
        return instance

    def stop(self, index: int) -> None:
        self._terminate([i for i in self.instances if self._index.get(i) == index])

    def close(self) -> None:
        self._terminate(list(self.instances))

    def _terminate(self, instances: list[str]) -> None:
        if instances:
            self._client.terminate_instances(InstanceIds=instances)
            self.instances = [i for i in self.instances if i not in instances]


def _boto3_client(ec2: config.Ec2Config):
    try:
        import boto3
    except ImportError:
        raise MarketError("autoscale.launcher ec2 needs boto3: pip install '.[aws]'") from None
    return boto3.client("ec2", region_name=ec2.region, endpoint_url=ec2.endpoint_url or None)


def make_launcher(cfg: config.MarketConfig, config_path: str, run_dir: str) -> Launcher:
    """The launcher the config's `autoscale.launcher` names."""
    if cfg.autoscale.launcher == "ec2":
        with open(config_path, encoding="utf-8") as fh:
            return Ec2Launcher(cfg.autoscale.ec2, fh.read())
    return LocalLauncher(config_path, run_dir)
