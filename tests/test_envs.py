"""Every environment installs from a committed lock that agrees with its direct pins.

Direct pins: pyproject.toml (.venv), locks/*.in (pip, label-studio-sdk, .venv-labelstudio) and
envs/*.in (the `--sdm conda` environments). Locks: locks/*.txt and envs/*.yaml, made from them
by `make lock` (uv pip compile, exact versions and sha256 hashes).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = PIN.match(line.strip())
        if m:
            out[canonicalize_name(m.group(1).split("[")[0])] = m.group(2)
    return out


def _lock(path: Path) -> dict[str, tuple[str, int]]:
    """Package -> (version, number of hashes) of a uv/pip-tools lock."""
    out: dict[str, tuple[str, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            name = canonicalize_name(m.group(1))
            out[name] = (m.group(2), line.count("--hash=sha256:"))
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = out[name]
            out[name] = (version, hashes + 1)
    return out


def _conda_lock(path: Path) -> dict[str, tuple[str, int]]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return {
        canonicalize_name(PIN.match(r).group(1)): (PIN.match(r).group(2), r.count("--hash="))
        for r in pip
    }


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return _pins(lines)


def _pairs():
    yield "pyproject.toml", _pyproject_pins(), REPO / "locks" / "venv.txt", _lock
    for src in sorted((REPO / "locks").glob("*.in")):
        yield src.name, _pins(src.read_text().splitlines()), src.with_suffix(".txt"), _lock
    for src in sorted((REPO / "envs").glob("*.in")):
        yield src.name, _pins(src.read_text().splitlines()), src.with_suffix(".yaml"), _conda_lock


@pytest.mark.parametrize("pair", list(_pairs()), ids=lambda p: p[0])
def test_each_lock_holds_its_direct_pins_with_hashes(pair):
    name, pins, lock_path, read = pair
    assert pins, f"{name}: no pins read"
    lock = read(lock_path)
    for pkg, version in pins.items():
        assert pkg in lock, f"{lock_path.name} lacks {pkg} ({name} pins it): run `make lock`"
        assert lock[pkg][0] == version, (
            f"{lock_path.name}: {pkg}=={lock[pkg][0]}, {name} pins {version}: run `make lock`"
        )
    unhashed = sorted(p for p, (_, n) in lock.items() if n == 0)
    assert not unhashed, f"{lock_path.name}: no sha256 for {unhashed}"
    if name == "pyproject.toml":  # the whole environment, not the direct pins alone
        assert len(lock) > 3 * len(pins)


def test_labelstudio_lock_keeps_the_sentry_sdk_it_starts_with():
    """Label Studio 1.23.2 dies at start with sentry-sdk 3 (`Unknown option
    'send_default_pii'`): its lock must hold a 2.x."""
    lock = _lock(REPO / "locks" / "labelstudio.txt")
    assert lock["label-studio"][0] == "1.23.2"
    assert lock["sentry-sdk"][0].startswith("2.")


def test_conda_envs_pin_what_pyproject_pins():
    project = _pyproject_pins()
    for src in sorted((REPO / "envs").glob("*.in")):
        for pkg, version in _pins(src.read_text().splitlines()).items():
            assert project.get(pkg) == version, (
                f"{src.name}: {pkg}=={version}, pyproject pins {project.get(pkg)}"
            )
        deploy = src.with_suffix(".post-deploy.sh")
        assert "--no-deps" in deploy.read_text(), f"{deploy.name} must install defectflow alone"


def test_makefile_installs_nothing_outside_a_lock():
    """Every `pip install` in the Makefile reads a hashed lock, except defectflow's own editable
    install (with --no-deps: its dependencies come from the lock)."""
    text = (REPO / "Makefile").read_text()
    locked = re.search(r"^PIP_LOCKED := (.*)$", text, re.M).group(1)
    assert "--require-hashes" in locked and "--no-deps" in locked
    for line in text.splitlines():
        if "pip install" in line and not line.startswith("PIP_LOCKED"):
            assert "--no-deps -" in line and line.rstrip().endswith("-e ."), line
        if "$(PIP_LOCKED)" in line:
            assert re.search(r"-r (locks/[\w.-]+\.txt)", line), line


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
    reason="runs in the project's .venv only (made by `make env` from locks/venv.txt)",
)
def test_the_installed_environment_is_the_lock():
    lock = _lock(REPO / "locks" / "venv.txt")
    lock |= _lock(REPO / "locks" / "label-studio-sdk.txt")
    lock |= _lock(REPO / "locks" / "pip.txt")
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if d.metadata["Name"]
    }
    installed.pop("defectflow", None)
    drift = {p: (v, lock.get(p, ("not in the lock",))[0]) for p, v in installed.items()}
    drift = {p: vs for p, vs in drift.items() if vs[0] != vs[1]}
    assert not drift, f"installed (version, locked): {drift}; run `make env` after `make lock`"
    missing = sorted(set(lock) - set(installed))
    assert not missing, f"locked but not installed: {missing}"
