"""The HTTP API: OpenAI-compatible routes, request validation and the error envelope."""

from keepwarm.api.app import ApiSettings, create_app

__all__ = ["ApiSettings", "create_app"]
