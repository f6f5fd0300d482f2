"""`keepwarm bench`: load generators, in-process baselines, statistics and the report.

Nothing is imported here: the server imports `bench.stats` and `bench.corpus`, and must
not pay for the in-process baselines' runtimes (ONNX Runtime among them) it never runs.
"""
