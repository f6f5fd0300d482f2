"""OpenAI's Batch and Files APIs for `/v1/embeddings`: durable jobs at background priority."""

from keepwarm.batches.runner import RunnerSettings
from keepwarm.batches.service import BatchService, BatchSettings

__all__ = ["BatchService", "BatchSettings", "RunnerSettings"]
