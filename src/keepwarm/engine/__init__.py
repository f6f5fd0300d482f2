"""The engine: tokenization, batching and scheduling between callers and runtimes."""

from keepwarm.engine.engine import EmbedOptions, Embeddings, Engine, EngineSettings, Timings
from keepwarm.engine.jobs import BACKGROUND, ONLINE
from keepwarm.engine.scheduler import BatchLimits

__all__ = ["BACKGROUND", "ONLINE", "BatchLimits", "EmbedOptions", "Embeddings", "Engine", "EngineSettings", "Timings"]
