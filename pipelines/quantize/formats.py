"""Weight format strings (`mxint4_32`, `mxfp4_e2m1_32`, `int4_g128`, ...) parsed into values.

Pure Python on purpose: the advisor parses formats on its fast path, where torch is not imported.

Grammar (Xu et al. 2024, §4.2 and App. C):
    mxint{P}_{K}            MX block of K ints, P = 2..8
    mxfp{P}_e{E}m{M}_{K}    MX block of K floats, P = 1 + E + M, 1 <= E <= 5, M >= 0
    int{P}_tens             classic symmetric int, one scale per tensor
    int{P}_chan             ... one scale per output channel
    int{P}_g{K}             ... one scale per group of K input elements
K is any integer 2..1024 for MX and groups.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from store.errors import InputError

E8M0_BITS = 8  # the MX shared scale: an 8-bit power of two
CLASSIC_SCALE_BITS = 16  # classic int scales are stored as fp16

GRAMMAR = (
    "mxint{P}_{K} (P 2-8) | mxfp{P}_e{E}m{M}_{K} (P = 1+E+M, E 1-5) | "
    "int{P}_tens | int{P}_chan | int{P}_g{K}   (K 2-1024), e.g. mxint4_32, mxfp4_e2m1_32, int4_g128"
)

_MXINT = re.compile(r"mxint(\d+)_(\d+)")
_MXFP = re.compile(r"mxfp(\d+)_e(\d+)m(\d+)_(\d+)")
_INT = re.compile(r"int(\d+)_(tens|chan|g(\d+))")


class FormatError(InputError):
    """A format string that does not follow the grammar; the message says how to fix it."""


@dataclass(frozen=True)
class ElementSpec:
    """The element number format inside a block: its grid and range, in units of the block scale."""

    kind: str  # "int" or "fp"
    precision: int  # P, bits per element including sign
    exp_bits: int  # E (0 for int)
    man_bits: int  # M (P - 1 for int: sign-magnitude)
    emax: int  # exponent of the largest power of two the element can hold
    emin: int  # smallest normal exponent (fp) - subnormals sit below it
    max_normal: float  # largest finite magnitude


def fp_element(exp_bits: int, man_bits: int) -> ElementSpec:
    """The OCP MX element of E exponent and M mantissa bits (FP8 E4M3/E5M2 follow the spec)."""
    bias = 2 ** (exp_bits - 1) - 1
    emin = 1 - bias
    if (exp_bits, man_bits) == (5, 2):  # IEEE-like: the top exponent is inf/NaN
        emax = 2**exp_bits - 2 - bias
        max_normal = 2.0**emax * (2 - 2.0**-man_bits)
    elif (exp_bits, man_bits) == (4, 3):  # only S.1111.111 is NaN
        emax = 2**exp_bits - 1 - bias
        max_normal = 2.0**emax * (2 - 2.0 ** -(man_bits - 1))
    else:  # FP6/FP4 and custom widths: every encoding is finite
        emax = 2**exp_bits - 1 - bias
        max_normal = 2.0**emax * (2 - 2.0**-man_bits)
    return ElementSpec("fp", 1 + exp_bits + man_bits, exp_bits, man_bits, emax, emin, max_normal)


def int_element(precision: int) -> ElementSpec:
    """The MX int element: sign-magnitude, an implicit 2^-(P-2) scale, |q| <= 2^(P-1) - 1."""
    max_normal = (2 ** (precision - 1) - 1) / 2 ** (precision - 2)
    return ElementSpec("int", precision, 0, precision - 1, 0, 0, max_normal)


@dataclass(frozen=True)
class Format:
    """A parsed weight format. `granularity` is block/tensor/channel/group."""

    name: str
    family: str  # "mxint", "mxfp" or "int"
    precision: int  # P, bits per element
    exp_bits: int  # E (0 for ints)
    man_bits: int  # M
    block_size: int | None  # K: MX block or int group length along the input dim; None otherwise
    granularity: str  # "block" (MX), "tensor", "channel", "group"

    @property
    def is_mx(self) -> bool:
        return self.family in ("mxint", "mxfp")

    @property
    def element(self) -> ElementSpec:
        """Element grid of an MX format (classic int has no fixed element grid)."""
        if self.family == "mxfp":
            return fp_element(self.exp_bits, self.man_bits)
        if self.family == "mxint":
            return int_element(self.precision)
        raise AttributeError(f"{self.name} is not an MX format")

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight including block/group scale overhead (MX: P + 8/K; int_g: P + 16/K).

        Per-tensor and per-channel scales are amortised over a whole tensor or row and counted
        exactly by `storage_bytes`, not here.
        """
        if self.is_mx:
            return self.precision + E8M0_BITS / self.block_size
        if self.granularity == "group":
            return self.precision + CLASSIC_SCALE_BITS / self.block_size
        return float(self.precision)

    @property
    def max_code(self) -> int:
        """Largest |element| in units of the element's smallest step (an export's integer code)."""
        if self.family == "mxfp":
            e = self.element
            return int(round(e.max_normal / 2.0 ** (e.emin - e.man_bits)))
        return 2 ** (self.precision - 1) - 1

    @property
    def container_bits(self) -> int:
        """Bits of the smallest signed integer type (4, 8, 16, 32) holding every code (ONNX export)."""
        for bits in (4, 8, 16, 32):
            if self.max_code <= 2 ** (bits - 1) - 1:
                return bits
        raise FormatError(f"{self.name}: codes up to {self.max_code} need more than 32 bits")

    def storage_bytes(self, out_features: int, in_features: int, container: bool = False) -> float:
        """Bytes to store one [out, in] weight in this format: elements plus all scales.

        `container=True`: elements at `container_bits` (what the ONNX export stores), e.g. FP4 E2M1
        codes 0..12 in INT8; scales are stored at their own width (E8M0 byte, fp16) either way.
        """
        width = self.container_bits if container else self.precision
        elements_bits = out_features * in_features * width
        if self.granularity in ("block", "group"):
            blocks_per_row = -(-in_features // self.block_size)
            scale_bits = E8M0_BITS if self.is_mx else CLASSIC_SCALE_BITS
            scales_bits = out_features * blocks_per_row * scale_bits
        elif self.granularity == "channel":
            scales_bits = out_features * CLASSIC_SCALE_BITS
        else:
            scales_bits = CLASSIC_SCALE_BITS
        return (elements_bits + scales_bits) / 8

    def as_dict(self) -> dict:
        """Plain-data view for JSON output and MLflow params."""
        return {
            "name": self.name,
            "family": self.family,
            "precision": self.precision,
            "exp_bits": self.exp_bits,
            "man_bits": self.man_bits,
            "block_size": self.block_size,
            "granularity": self.granularity,
            "bits_per_weight": self.bits_per_weight,
        }

    def __str__(self) -> str:
        return self.name


def _check_block(k: int, text: str) -> None:
    if not 2 <= k <= 1024:
        raise FormatError(f"block size K={k} in {text!r} is outside 2-1024. Grammar: {GRAMMAR}")


def parse_format(text: str) -> Format:
    """Parse a format string; raise FormatError with the grammar and a close valid spelling."""
    raw = text
    text = text.strip().lower()
    if m := _MXINT.fullmatch(text):
        p, k = int(m[1]), int(m[2])
        if not 2 <= p <= 8:
            raise FormatError(f"mxint precision P={p} in {raw!r} is outside 2-8. Grammar: {GRAMMAR}")
        _check_block(k, raw)
        return Format(text, "mxint", p, 0, p - 1, k, "block")
    if m := _MXFP.fullmatch(text):
        p, e, man, k = (int(g) for g in m.groups())
        if not 1 <= e <= 5:
            raise FormatError(f"mxfp exponent bits E={e} in {raw!r} are outside 1-5. Grammar: {GRAMMAR}")
        if p != 1 + e + man:
            fix = f"mxfp{1 + e + man}_e{e}m{man}_{k}"
            raise FormatError(f"{raw!r}: P must equal 1+E+M = {1 + e + man}; did you mean {fix!r}?")
        if man > 10:
            raise FormatError(f"mxfp mantissa bits M={man} in {raw!r} exceed 10. Grammar: {GRAMMAR}")
        _check_block(k, raw)
        return Format(text, "mxfp", p, e, man, k, "block")
    if m := _INT.fullmatch(text):
        p = int(m[1])
        if not 2 <= p <= 8:
            raise FormatError(f"int precision P={p} in {raw!r} is outside 2-8. Grammar: {GRAMMAR}")
        if m[2] == "tens":
            return Format(text, "int", p, 0, p - 1, None, "tensor")
        if m[2] == "chan":
            return Format(text, "int", p, 0, p - 1, None, "channel")
        k = int(m[3])
        _check_block(k, raw)
        return Format(text, "int", p, 0, p - 1, k, "group")
    hint = _close_spelling(text)
    suggestion = f" did you mean {hint!r}?" if hint else ""
    raise FormatError(f"unknown format {raw!r};{suggestion} Grammar: {GRAMMAR}")


def _close_spelling(text: str) -> str | None:
    """A valid format close to a mistyped one: fix separators first, else the nearest known."""
    normal = re.sub(r"[\s\-./:]+", "_", text).replace("mx_", "mx")
    normal = re.sub(r"^(mx(?:int|fp))_(\d)", r"\1\2", normal)
    for candidate in (normal, normal.replace("fp_", "fp")):
        if _MXINT.fullmatch(candidate) or _MXFP.fullmatch(candidate) or _INT.fullmatch(candidate):
            return candidate
    hint = difflib.get_close_matches(text, _SPELLINGS, n=1, cutoff=0.4)
    return hint[0] if hint else None


# Xu et al. study 36 MX types: element precision 2-6 x block sizes 16-128. The paper does not list
# the float elements; we take one per precision 3-6 (fp3_e1m1, fp4_e2m1, fp5_e2m2, fp6_e3m2),
# which with mxint2-6 gives 9 elements x 4 block sizes = 36.
PAPER_BLOCK_SIZES = (16, 32, 64, 128)
PAPER_ELEMENTS = ("mxint2", "mxint3", "mxint4", "mxint5", "mxint6",
                  "mxfp3_e1m1", "mxfp4_e2m1", "mxfp5_e2m2", "mxfp6_e3m2")

PRESETS: dict[str, tuple[str, ...]] = {
    "xu-mx36": tuple(f"{el}_{k}" for el in PAPER_ELEMENTS for k in PAPER_BLOCK_SIZES),
    "ocp-mx": ("mxfp8_e5m2_32", "mxfp8_e4m3_32", "mxfp6_e3m2_32", "mxfp6_e2m3_32",
               "mxfp4_e2m1_32", "mxint8_32"),
    "classic-int": ("int8_chan", "int4_chan", "int4_g128", "int4_g32", "int3_g128", "int8_tens"),
    # Ouyang et al.'s precisions P in {2, 3, 4, 8}, as grouped ints and as MX ints (one QiD law each)
    "qid": tuple(f"{fam}{p}_{k}" for fam, k in (("int", "g32"), ("mxint", "32")) for p in (2, 3, 4, 8)),
    "demo": ("mxint8_32", "mxint4_32", "mxfp4_e2m1_32", "mxfp6_e3m2_32", "mxint3_32",
             "int8_chan", "int4_g128", "int4_chan"),
}

_SPELLINGS = sorted({f for preset in PRESETS.values() for f in preset}
                    | {f"int{p}_{g}" for p in (2, 3, 4, 8) for g in ("tens", "chan", "g128")})


def parse_formats(spec: str | list[str] | tuple[str, ...]) -> list[Format]:
    """Parse a comma-separated list that may mix format strings and preset names."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    formats: list[Format] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        names = PRESETS.get(item.lower(), (item,))
        formats.extend(parse_format(n) for n in names)
    if not formats:
        raise FormatError(f"no formats given. Grammar: {GRAMMAR}; presets: {', '.join(PRESETS)}")
    return list(dict.fromkeys(formats))  # keep order, drop repeats
