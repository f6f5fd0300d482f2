"""What a model's answer can be besides a float vector: compressed vectors, sparse and multi-vector outputs.

Everything here is NumPy arithmetic on what a runtime returned, shared by every runtime
and every HTTP dialect.
"""
