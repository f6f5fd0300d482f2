"""keepwarm: self-hosted, OpenAI-compatible embeddings with exact, versioned vectors."""

__version__ = "0.1.0"
