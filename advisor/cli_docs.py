"""docs/cli.md from the CLI's own `--help` texts: `python -m advisor.cli_docs [--check]`.

The help texts are the reference; this page only collects them, so it cannot say anything the
commands do not. `--check` exits 1 when the page is stale (the suite runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from advisor.cli import cli

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _help(command: click.Command, path: list[str], parent=None) -> str:
    with click.Context(command, info_name=path[-1], parent=parent, terminal_width=100,
                       max_content_width=100) as ctx:
        return ctx.get_help()


def render() -> str:
    """The page: the group's help, then every command's (and subcommand's) in order."""
    parts = ["# Command reference\n",
             "Generated from `advisor --help` and each command's `--help` by `make cli-docs` "
             "(`python -m advisor.cli_docs`); do not edit by hand.\n"]

    def walk(command, path, parent):
        level = "#" * min(len(path) + 1, 4)
        parts.append(f"{level} `{' '.join(path)}`\n\n```text\n{_help(command, path, parent).rstrip()}\n```\n")
        if isinstance(command, click.Group):
            with click.Context(command, info_name=path[-1], parent=parent) as ctx:
                for name in command.list_commands(ctx):
                    walk(command.get_command(ctx, name), path + [name], ctx)

    walk(cli, ["advisor"], None)
    return "\n".join(parts)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is stale: run `make cli-docs`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
