"""`--json` output that every JSON parser reads: a non-finite number is null.

Python's json writes NaN and Infinity, which are not JSON (jq, JavaScript and strict parsers refuse
them); an interval with no finite bound or a loss that was never measured is null instead.
"""

from __future__ import annotations

import json
import math

import click


def strict(value):
    """`value` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def echo_json(value, indent: int = 2, default=None) -> None:
    """Print `value` as strict JSON (non-finite numbers as null)."""
    click.echo(json.dumps(strict(value), indent=indent, default=default, allow_nan=False))
