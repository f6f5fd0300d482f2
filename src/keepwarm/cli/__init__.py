"""The `keepwarm` command line: one module per command (or command group)."""

from __future__ import annotations

import click

from keepwarm.cli.adapter import adapter
from keepwarm.cli.bench import bench
from keepwarm.cli.bench_batches import bench_batches
from keepwarm.cli.evaluate import evaluate
from keepwarm.cli.keys import keys
from keepwarm.cli.models import export, models
from keepwarm.cli.reembed import reembed
from keepwarm.cli.serve import serve
from keepwarm.cli.usage import usage


@click.group()
@click.version_option(package_name="keepwarm")
def main() -> None:
    """keepwarm: self-hosted, OpenAI-compatible embeddings."""


main.add_command(serve)
main.add_command(reembed)
main.add_command(adapter)
main.add_command(bench_batches)
main.add_command(models)
main.add_command(export)
main.add_command(keys)
main.add_command(usage)
main.add_command(bench)
main.add_command(evaluate)
