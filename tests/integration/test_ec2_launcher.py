"""The EC2 launcher's calls, against a moto server (moto's server mode, a real HTTP
endpoint in its own process). This checks the requests the launcher makes and what it
puts in user-data; it cannot show that a real instance boots and trades."""

from __future__ import annotations

import base64
import re
import socket

import boto3
import pytest
import yaml

from pyromarket import config
from pyromarket.launcher import Ec2Launcher, make_launcher
from pyromarket.process import Service, free_ports, python_module
from tests.helpers import config_dict, write_config


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def moto_url(tmp_path, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    (port,) = free_ports(1)
    server = Service("moto", python_module("moto.server", "-H", "127.0.0.1", "-p", str(port)),
                     ready=lambda: _answers(port), output_path=str(tmp_path / "moto.out"))
    server.start(60)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def ec2_config(tmp_path, url: str, **ec2) -> tuple[config.MarketConfig, str]:
    data = config_dict(["buyer", "seller", "buyer"], 1)
    data["autoscale"] = {**data["autoscale"], "enabled": True, "launcher": "ec2",
                         "ec2": {"region": "us-east-1", "image_id": "ami-12c6146b",
                                 "instance_type": "t3.micro",
                                 "package": "pyromarket @ git+https://example.org/pyromarket.git",
                                 "endpoint_url": url, "subnet_id": "", "security_group_ids": [],
                                 "key_name": "", **ec2}}
    path = write_config(tmp_path / "market.yaml", data)
    return config.load(path), path


def client(url: str):
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=url)


def tagged(ec2, index: int) -> list[dict]:
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{Ec2Launcher.TAG}",
                                             "Values": [str(index)]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def test_launch_runs_one_tagged_instance_whose_user_data_starts_the_trader(tmp_path, moto_url):
    cfg, path = ec2_config(tmp_path, moto_url)
    launcher = make_launcher(cfg, path, str(tmp_path))
    assert isinstance(launcher, Ec2Launcher)
    instance_id = launcher.launch(2)
    ec2 = client(moto_url)
    (instance,) = tagged(ec2, 2)
    assert instance["InstanceId"] == instance_id
    assert (instance["ImageId"], instance["InstanceType"]) == ("ami-12c6146b", "t3.micro")
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    script = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash")
    assert "pip install 'pyromarket @ git+https://example.org/pyromarket.git'" in script
    assert "-m pyromarket.replica --config /etc/pyromarket/market.yaml" in script
    assert "--index 2 " in script
    shipped = base64.b64decode(re.search(r"echo (\S+) \| base64 -d", script).group(1)).decode()
    with open(path, encoding="utf-8") as fh:
        assert yaml.safe_load(shipped) == yaml.safe_load(fh)         # the market's own config
    assert tagged(ec2, 3) == []


def test_close_terminates_what_the_launcher_started(tmp_path, moto_url):
    cfg, path = ec2_config(tmp_path, moto_url)
    launcher = make_launcher(cfg, path, str(tmp_path))
    ids = {launcher.launch(2), launcher.launch(3)}
    launcher.close()
    ec2 = client(moto_url)
    states = {i["InstanceId"]: i["State"]["Name"] for n in (2, 3) for i in tagged(ec2, n)}
    assert set(states) == ids
    assert set(states.values()) <= {"shutting-down", "terminated"}


def test_stop_terminates_only_that_traders_instances(tmp_path, moto_url):
    cfg, path = ec2_config(tmp_path, moto_url)
    launcher = make_launcher(cfg, path, str(tmp_path))
    first, other = launcher.launch(2), launcher.launch(3)
    launcher.stop(2)                              # launch 1 of trader 2 was given up on
    retry = launcher.launch(2)
    ec2 = client(moto_url)
    states = {i["InstanceId"]: i["State"]["Name"] for n in (2, 3) for i in tagged(ec2, n)}
    assert states[first] in {"shutting-down", "terminated"}
    assert states[other] == states[retry] == "running"
    assert launcher.instances == [other, retry]


def test_network_settings_reach_the_instance(tmp_path, moto_url):
    ec2 = client(moto_url)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="market", Description="pyro", VpcId=vpc)["GroupId"]
    ec2.create_key_pair(KeyName="market-key")
    cfg, path = ec2_config(tmp_path, moto_url, subnet_id=subnet, security_group_ids=[group],
                           key_name="market-key")
    instance_id = make_launcher(cfg, path, str(tmp_path)).launch(4)
    (instance,) = tagged(ec2, 4)
    assert instance["InstanceId"] == instance_id
    assert instance["SubnetId"] == subnet and instance["KeyName"] == "market-key"
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group]


def test_an_ec2_launcher_needs_its_section(tmp_path):
    data = config_dict(["buyer", "seller"], 1)
    data["autoscale"] = {**data["autoscale"], "launcher": "ec2"}
    with pytest.raises(config.ConfigError, match="autoscale.ec2: is required"):
        config.from_dict(data)
