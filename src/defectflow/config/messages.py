"""Config errors in the user's words: the key as they wrote it (no union tags), the file that
sets it, a did-you-mean."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
)

from defectflow.config.schema import Config, format_key
from defectflow.data.sources import Source
from defectflow.models.backends import REGISTRY


def _members(annotation: Any) -> list[Any]:
    """The types a field may hold: Optional and unions opened, Annotated stripped."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a) if m is not type(None)]
    return [annotation]


def _tag_member(members: list[Any], tag: Any) -> Any:
    """The member of a discriminated union whose Literal discriminator is ``tag``."""
    for m in members:
        if isinstance(m, type) and issubclass(m, BaseModel):
            for f in m.model_fields.values():
                if typing.get_origin(f.annotation) is Literal and tag in typing.get_args(
                    f.annotation
                ):
                    return m
    return None


def key_path(loc: tuple[Any, ...]) -> tuple[list[Any], list[str]]:
    """A pydantic error location as the user's keys (the union tags pydantic inserts dropped:
    ``models.knn.knn.k`` -> ``models.knn.k``) and the keys allowed where the last one stands."""
    path: list[Any] = []
    current: list[Any] = [Config]
    allowed: list[str] = []
    for e in loc:
        models = [m for m in current if isinstance(m, type) and issubclass(m, BaseModel)]
        model = next((m for m in models if e in m.model_fields), None)
        if model is not None:
            path.append(e)
            allowed = list(model.model_fields)
            current = _members(model.model_fields[e].annotation)
            continue
        tagged = _tag_member(current, e) if isinstance(e, str) else None
        if tagged is not None and len(current) > 1:
            current = [tagged]  # the tag pydantic put in the location, not a key of the user
            continue
        named = [m for m in current if getattr(m, "__name__", None) == e]
        if named:
            current = named
            continue
        containers = [m for m in current if typing.get_origin(m) in (dict, list)]
        if containers:
            path.append(e)
            current = _members(typing.get_args(containers[0])[-1])
            continue
        path.append(e)
        allowed = sorted({k for m in models for k in m.model_fields})
        current = []
    return path, allowed


def describe(err: dict[str, Any]) -> tuple[list[Any], str]:
    """(key path, what is wrong there) of one pydantic error."""

    path, allowed = key_path(tuple(err["loc"]))
    loc = format_key(path)
    given = err.get("input")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6) if path else []
        hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(allowed)}"
        return path, f"{loc}: unknown key{hint}"
    if err["type"] == "missing":
        return path, f"{loc}: required key is missing"
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        key = str(ctx.get("discriminator", "type")).strip("'")
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if err["type"] == "union_tag_not_found":
            kinds = (
                list(REGISTRY)
                if key == "backend"
                else [
                    typing.get_args(m.model_fields["type"].annotation)[0] for m in _members(Source)
                ]
            )
            return path, f"{loc}: needs `{key}:`, one of {', '.join(kinds)}"
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        return path, f"{loc}.{key}: {ctx.get('tag')!r} is not one of {', '.join(tags)}{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return path, f"{loc}: {msg}" + ("" if isinstance(given, dict) else f" (given {given!r})")


def defined_in(path: list[Any], files: list[tuple[str, Any]]) -> str | None:
    """The last file that sets ``path`` (or the longest part of it): later files override."""
    best, depth = None, 0
    for name, doc in files:
        node, d = doc, 0
        for key in path:
            listed = isinstance(node, list) and isinstance(key, int) and key < len(node)
            if listed or (isinstance(node, dict) and key in node):
                node, d = node[key], d + 1
            else:
                break
        if d >= depth and d > 0:
            best, depth = name, d
    return best
