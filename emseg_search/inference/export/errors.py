"""Why an export failed: it could not start (bad input: exit 2) or could not be made (exit 1)."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export cannot be made or run; the message says why and what to do."""


class ExportSetupError(ExportError):
    """An export cannot start: unknown format, bad check size, missing `export` extra."""
