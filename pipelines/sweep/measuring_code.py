"""Which code computes which measured value: the packages whose versions key the sweep's runs.

Every value depends on the core (model and corpus sources, the formats and RTN, NLL, SQNR and the
landscape); GPTQ's variants also on `pipelines/gptq`. So a change to GPTQ re-measures GPTQ
variants only, and any file added under these packages keys runs without a list to update.
"""

from __future__ import annotations

from pathlib import Path

from store.code_version import code_version

PIPELINES = Path(__file__).resolve().parents[1]
CORE = ("sources", "quantize", "measure")
METHOD_PACKAGES = {"rtn": (), "gptq": ("gptq",)}


def core_code_version() -> str:
    """The version of the code every measured value of a model depends on."""
    return code_version(*(str(PIPELINES / name) for name in CORE))


def method_code_version(method: str) -> str | None:
    """The version of the code only `method`'s variants depend on (None: the core alone)."""
    packages = METHOD_PACKAGES[method]
    return code_version(*(str(PIPELINES / name) for name in packages)) if packages else None
