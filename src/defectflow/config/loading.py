"""Reading and validating a config: a YAML file, or the mapping Snakemake merged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from defectflow.config.messages import defined_in, describe
from defectflow.config.schema import Config, format_key
from defectflow.config.sweeps import expand
from defectflow.errors import ConfigError
from defectflow.io import load_yaml


def parse_config(
    data: dict[str, Any] | None, where: str = "config", files: list[tuple[str, Any]] | None = None
) -> Config:
    """Validate a config mapping (sweeps expanded into model variants). Raises
    :class:`ConfigError` naming each bad key once, the file that sets it (``files``: name and
    content of the YAML files the mapping was merged from), the value given and what is allowed
    (a did-you-mean for a misspelt key)."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"invalid {where}: the top level must be a mapping of keys, not {type(data).__name__}"
        )
    data = dict(data or {})
    if isinstance(data.get("models"), dict):  # `knn: null` in a user's file drops that model
        data["models"] = {k: v for k, v in data["models"].items() if v is not None}
    try:
        return Config.model_validate(expand(data))
    except ConfigError as exc:  # a sweep that cannot be expanded
        raise ConfigError(
            f"invalid {defined_in(['models'], files or []) or where}:\n  {exc}"
        ) from None
    except ValidationError as exc:
        prefix = ["backbone"] if exc.title == "BackboneConfig" else []
        by_file: dict[str, list[str]] = {}
        for e in exc.errors(include_url=False):
            path, text = describe({**e, "loc": (*prefix, *e["loc"])})
            by_file.setdefault(defined_in(path, files or []) or where, []).append(text)
        parts = [
            f"invalid {w}:\n  " + "\n  ".join(dict.fromkeys(lines)) for w, lines in by_file.items()
        ]
        raise ConfigError("\n".join(parts)) from None


def parse_workflow_config(
    data: dict[str, Any],
    configfiles: list[Any],
    overrides: list[Any] = (),
    command_line: dict[str, Any] | None = None,
) -> Config:
    """The config Snakemake merged from ``configfiles`` (and ``--config``): each file is read
    again to refuse a key written twice (YAML keeps the last silently) and to name, in each
    error, the file that sets the bad key. ``overrides``: the ``--configfile`` files, which take
    precedence over the Snakefile's ``configfile:``; ``command_line``: the ``--config`` values,
    over all of them."""
    late = [str(f) for f in overrides]
    ordered = [str(f) for f in configfiles if str(f) not in late] + late
    files = [(f, load_yaml(f, error=ConfigError)) for f in dict.fromkeys(ordered)]
    if command_line:  # `--config key=value` overrides every file: a mistake there is its own
        files.append(("--config", dict(command_line)))
    where = "config (from --config or defaults)"
    cfg = parse_config(data, where=where, files=files)
    by_file: dict[str, list[str]] = {}
    for key, text in cfg.missing_files():
        by_file.setdefault(defined_in(key, files) or where, []).append(f"{format_key(key)}: {text}")
    if by_file:
        raise ConfigError(
            "\n".join(f"invalid {w}:\n  " + "\n  ".join(lines) for w, lines in by_file.items())
        )
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    return parse_config(load_yaml(path, error=ConfigError), where=str(path))
