"""The `keepwarm` command line: one module per command (or command group).

A command's module is imported only when that command runs (or `--help` lists them),
so `keepwarm keys` does not pay for loading the server, the engine and the web stack.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of its click command
_COMMANDS = {
    "adapter": "keepwarm.cli.adapter:adapter",
    "bench": "keepwarm.cli.bench:bench",
    "bench-batches": "keepwarm.cli.bench_batches:bench_batches",
    "eval": "keepwarm.cli.evaluate:evaluate",
    "export": "keepwarm.cli.models:export",
    "keys": "keepwarm.cli.keys:keys",
    "models": "keepwarm.cli.models:models",
    "reembed": "keepwarm.cli.reembed:reembed",
    "serve": "keepwarm.cli.serve:serve",
    "usage": "keepwarm.cli.usage:usage",
}


class _LazyGroup(click.Group):
    """A group that imports each command's module on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="keepwarm")
def main() -> None:
    """keepwarm: self-hosted, OpenAI-compatible embeddings."""
