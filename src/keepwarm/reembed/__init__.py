"""`keepwarm reembed`: embed a whole corpus with one exact model version, resumably."""

from keepwarm.reembed.dataset import VectorDataset, read_vectors
from keepwarm.reembed.embedders import LocalEmbedder, RemoteEmbedder
from keepwarm.reembed.reader import Corpus
from keepwarm.reembed.run import RunReport, reembed

__all__ = [
    "Corpus",
    "LocalEmbedder",
    "RemoteEmbedder",
    "RunReport",
    "VectorDataset",
    "read_vectors",
    "reembed",
]
