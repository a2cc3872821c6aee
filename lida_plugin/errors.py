"""Exceptions the runtime raises. Each names the file (or thing) and the reason."""

from __future__ import annotations


class LidaError(Exception):
    """Base class: an expected failure with a message fit for a user."""


class InputError(LidaError):
    """An input file cannot be analysed (not an image, truncated, too small, ...)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ModelError(LidaError):
    """The encoder model is missing or does not follow the model contract."""


class StoreError(LidaError):
    """The exemplar store is missing, locked, corrupt or made by another model."""
