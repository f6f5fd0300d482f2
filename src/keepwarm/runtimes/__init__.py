"""Runtimes turn batches of token ids into vectors: ONNX Runtime (default) and PyTorch.

Submodules are imported on demand so that serving a cached ONNX artifact never pays
for importing torch.
"""
