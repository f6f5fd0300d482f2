"""Errors crossing from a replica to the ingress as plain values.

A replica answers a refused request (bad input, too long, a full queue) with a
`Failure` rather than raising: Ray would wrap the exception, and keepwarm's errors with
constructors of their own (ModelNotFound, InputTooLong) do not survive pickling. The
ingress raises the very same error again, so the client sees what one process answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keepwarm.errors import KeepwarmError


@dataclass(frozen=True)
class Failure:
    """A KeepwarmError as data: its class, message and attributes."""

    kind: type[KeepwarmError]
    message: str
    attributes: dict[str, Any]

    @classmethod
    def of(cls, error: KeepwarmError) -> Failure:
        return cls(type(error), error.message, dict(vars(error)))

    def error(self) -> KeepwarmError:
        """The error again, without calling its constructor (whose arguments are not kept)."""
        error = self.kind.__new__(self.kind)
        Exception.__init__(error, self.message)
        vars(error).update(self.attributes)
        return error
