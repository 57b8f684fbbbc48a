"""Typed errors a user can cause. The CLI prints each as one line, never a traceback."""

from __future__ import annotations


class PrhBenchError(Exception):
    """Base of every error a user can cause; its message says what was wrong and what to do."""


class UnknownIdError(PrhBenchError, KeyError):
    """An id that no plugin registered."""

    def __init__(self, kind: str, name: str, suggestions: list[str], list_command: str):
        self.kind, self.name, self.suggestions = kind, name, suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Run '{list_command}' to list them.")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateIdError(PrhBenchError):
    """Two plugins registered the same id (or alias)."""


class PluginError(PrhBenchError):
    """A plugin failed to import, or raised inside one of its hooks."""


class InvalidInputError(PrhBenchError, ValueError):
    """An argument or input tensor outside what is allowed; the message names it and the range."""


class DatasetError(PrhBenchError):
    """A dataset that cannot be read, or a bad sample (the message names its index)."""


class ModelError(PrhBenchError):
    """A model that cannot be loaded or that produced unusable features."""
