"""Drift adapters: search an old index with a new model version while the re-index runs."""

from keepwarm.adapter.linear import METHODS, LinearAdapter, fit
from keepwarm.adapter.perturb import perturbed_copy
from keepwarm.adapter.retention import measure, retrieval_set, split

__all__ = ["METHODS", "LinearAdapter", "fit", "measure", "perturbed_copy", "retrieval_set", "split"]
