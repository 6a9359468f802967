"""envs/*.yaml (for --sdm conda) must pin the same versions as pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$", line.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins(project["dependencies"])
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        env_pins = _pins(pip)
        assert env_pins, env
        for name, version in env_pins.items():
            assert pins.get(name) == version, (
                f"{env.name}: {name}=={version}, pyproject pins {pins.get(name)}"
            )
