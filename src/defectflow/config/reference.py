"""`config/README.md`'s key table, generated from the model."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
)

from defectflow.config.schema import Config, DatasetConfig
from defectflow.data.sources import REGISTRY as SOURCES
from defectflow.models.backends import REGISTRY


def _type_name(annotation: Any) -> str:
    if "discriminator" in str(annotation):
        return "name -> model" if "KnnParams" in str(annotation) else "list of sources"
    text = (
        str(annotation)
        .replace("typing.", "")
        .replace("defectflow.config.schema.", "")
        .replace("defectflow.records.", "")
    )
    return re.sub(r"<class '([^']+)'>", r"\1", text).replace(" | ", " or ")


def config_reference() -> str:
    """Markdown table of every config key (path, type, default, meaning), from the model."""
    rows: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            ann = info.annotation
            if path == "models":
                default = "knn, patchcore, padim (each with its defaults)"
            elif info.default_factory is not None:
                try:
                    default = info.default_factory()  # type: ignore[call-arg]
                except TypeError:
                    default = "(see below)"
                if isinstance(default, BaseModel):
                    default = "(section)"
            else:
                default = "**required**" if info.is_required() else info.default
            desc = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{path}` | `{_type_name(ann)}` | `{default}` | {desc} |")
            sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if sub is None and typing.get_origin(ann) in (typing.Union, types.UnionType):
                args = [
                    a
                    for a in typing.get_args(ann)
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ]
                sub = args[0] if len(args) == 1 else None
            if sub is not None:
                walk(sub, f"{path}.")
            if path == "datasets":
                walk(DatasetConfig, "datasets.<name>.")
            if path == "datasets.<name>.sources":
                for kind, entry in SOURCES.items():
                    src = entry.params
                    walk(src, f"datasets.<name>.sources[type={kind}].")
            if path == "models":
                for mdl in (e.params for e in REGISTRY.values()):
                    kind = mdl.model_fields["backend"].annotation.__args__[0]
                    walk(mdl, f"models.<name>[backend={kind}].")

    walk(Config, "")
    head = "| key | type | default | meaning |\n|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


REFERENCE_BEGIN = "<!-- BEGIN GENERATED: config reference (make docs) -->"
REFERENCE_END = "<!-- END GENERATED -->"


def update_reference(readme: str | Path) -> bool:
    """Rewrite the generated key table inside ``config/README.md``; True if it changed."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(REFERENCE_BEGIN) + len(REFERENCE_BEGIN), text.index(REFERENCE_END)
    new = text[:start] + "\n" + config_reference() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
