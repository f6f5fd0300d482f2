"""The engine: tokenization, scheduling and model calls between callers and runtimes."""

from keepwarm.engine.engine import Engine
from keepwarm.engine.scheduler import CallLimits, CallLimitSettings
from keepwarm.engine.tokenization import Token
from keepwarm.engine.types import (
    Answer,
    Classifications,
    Embeddings,
    EmbedOptions,
    EngineSettings,
    Inputs,
    ModelInfo,
    ModelView,
    ScoreOptions,
    Scores,
    Timings,
)
from keepwarm.engine.work import BACKGROUND, ONLINE

__all__ = [
    "Answer",
    "BACKGROUND",
    "ONLINE",
    "CallLimitSettings",
    "CallLimits",
    "Classifications",
    "EmbedOptions",
    "Embeddings",
    "Engine",
    "EngineSettings",
    "Inputs",
    "ModelInfo",
    "ModelView",
    "ScoreOptions",
    "Scores",
    "Timings",
    "Token",
]
