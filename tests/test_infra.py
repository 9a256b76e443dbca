"""The deployment file must keep pointing at a real flow with parameters it accepts."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_prefect_deployments_point_at_real_flows_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((ROOT / "infra" / "prefect.yaml").read_text())
    assert config["deployments"]
    for deployment in config["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment["parameters"]) <= accepted, deployment["name"]
        assert (ROOT / deployment["parameters"]["manifest"]).is_file()
