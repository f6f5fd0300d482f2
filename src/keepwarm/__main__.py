"""`python -m keepwarm` is the `keepwarm` command."""

from keepwarm.cli import main

main()
