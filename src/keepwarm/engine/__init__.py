"""The engine: tokenization, scheduling and model calls between callers and runtimes."""

from keepwarm.engine.engine import Engine
from keepwarm.engine.scheduler import CallLimits, CallLimitSettings
from keepwarm.engine.tokenization import Token
from keepwarm.engine.types import (
    Embeddings,
    EmbedOptions,
    EngineSettings,
    Inputs,
    ModelInfo,
    ModelView,
    Timings,
)
from keepwarm.engine.work import BACKGROUND, ONLINE

__all__ = [
    "BACKGROUND",
    "ONLINE",
    "CallLimitSettings",
    "CallLimits",
    "EmbedOptions",
    "Embeddings",
    "Engine",
    "EngineSettings",
    "Inputs",
    "ModelInfo",
    "ModelView",
    "Timings",
    "Token",
]
