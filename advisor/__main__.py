"""`python -m advisor` — the same CLI as the `advisor` console script."""

from advisor.cli import cli

cli(prog_name="advisor")
