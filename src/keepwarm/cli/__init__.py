"""The `keepwarm` command line: one module per command (or command group)."""

from __future__ import annotations

import click

from keepwarm.cli.bench import bench
from keepwarm.cli.serve import serve


@click.group()
@click.version_option(package_name="keepwarm")
def main() -> None:
    """keepwarm: self-hosted, OpenAI-compatible embeddings."""


main.add_command(serve)
main.add_command(bench)
