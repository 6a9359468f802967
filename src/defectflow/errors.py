"""Errors users can catch. Every message says what was wrong, where, and what to do."""

from __future__ import annotations


class DefectflowError(Exception):
    """Base class of every error defectflow raises on purpose (bad input, bad config, ...)."""


class ConfigError(DefectflowError):
    """The workflow configuration is invalid; ``code``: the preflight code a report gives it."""

    code = "CONFIG_INVALID"


class ManifestError(DefectflowError):
    """A data source (manifest file or folder) cannot be read or mapped to records; ``file`` and
    ``line`` say where, when known; ``code`` is the preflight code a report gives it."""

    code = "MANIFEST_UNREADABLE"

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file, self.line = file, line


class SchemaValidationError(DefectflowError):
    """An artifact does not match its JSON Schema."""


class PreflightFailed(DefectflowError):
    """Preflight found issues of severity ``error``; nothing downstream may run."""


class IntegrityError(DefectflowError):
    """A file's sha256 differs from the one recorded for it."""


class ModelError(DefectflowError):
    """A model cannot be built, fitted or loaded."""
