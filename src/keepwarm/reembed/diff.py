"""Must an index be re-embedded? The same texts through two model versions, compared text by text.

Two versions are interchangeable when every text's vectors agree to the cosine at which
a runtime may stand in for fp32 (`FP32_EQUIVALENT`): then an index built with one can be
searched with the other. `keepwarm models diff` and the dashboard's versions page both
ask this question, through this one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from keepwarm.engine import EmbedOptions, Engine
from keepwarm.runtimes.accuracy import FP32_EQUIVALENT, row_cosines

_SAME = "vectors are interchangeable: an index built with one can be searched with the other"
_DIFFERENT = (
    "vectors are NOT interchangeable: re-embed the index (serve both versions and pin the old one meanwhile)"
)


@dataclass(frozen=True)
class VersionDiff:
    """Two versions' vectors for the same texts, compared."""

    first: str  # name@version
    second: str
    texts: int
    cosines: np.ndarray | None  # one per text; None when the vectors have different sizes
    reason: str | None = None  # why there are no cosines

    @property
    def interchangeable(self) -> bool:
        return self.cosines is not None and float(self.cosines.min()) >= FP32_EQUIVALENT

    @property
    def advice(self) -> str:
        return _SAME if self.interchangeable else _DIFFERENT

    def report(self) -> dict[str, Any]:
        """The summary `keepwarm models diff` prints: mean and minimum cosine, verdict and advice."""
        report: dict[str, Any] = {"first": self.first, "second": self.second, "texts": self.texts}
        if self.cosines is None:
            report.update(interchangeable=False, reason=self.reason)
        else:
            report.update(
                mean_cosine=float(self.cosines.mean()),
                min_cosine=float(self.cosines.min()),
                interchangeable=self.interchangeable,
            )
        report["reembed_needed"] = not self.interchangeable
        report["advice"] = self.advice
        return report


async def diff_versions(engine: Engine, first: str, second: str, texts: list[str]) -> VersionDiff:
    """Embed `texts` with `first` and `second` (names, aliases or name@version pins) and compare.

    Texts over a model's limit are truncated, as sentence-transformers would, so any
    sample can be compared.
    """
    options = EmbedOptions(truncate=True)
    a = await engine.embed(first, texts, options)
    b = await engine.embed(second, texts, options)
    if a.vectors.shape != b.vectors.shape:
        reason = f"dimensions differ: {a.vectors.shape[1]} vs {b.vectors.shape[1]}"
        return VersionDiff(a.model.label, b.model.label, len(texts), None, reason)
    return VersionDiff(a.model.label, b.model.label, len(texts), row_cosines(a.vectors, b.vectors))
