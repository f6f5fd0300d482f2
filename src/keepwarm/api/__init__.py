"""The HTTP API: OpenAI-compatible routes, request validation and the error envelope.

`app.create_app` builds the application from its collaborators (wired in `keepwarm.server`);
`settings` holds what it is configured with. This package root imports neither, so reading
settings (the command line's defaults) does not load the web framework.
"""
