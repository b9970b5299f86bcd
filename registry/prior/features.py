"""What the prior sees of a (model, format, method): model facts, format facts and measured noise.

Model facts: N non-embedding parameters, D training tokens (missing for some families: imputed
with the training median and flagged), architecture. Format facts beyond the bit count P: the
element type (int/fp), MX vs classic, the granularity (tensor/channel/group/block), and the
format's quantization noise on LLM-like weights — its SQNR, measured once per format by RTN on a
fixed synthetic heavy-tailed matrix (advisor/prior_command.py, with the pipelines' quantizers)
and stored with the prior's parameters, so answering needs no torch. Xu et al. tie the loss to
SQNR through the loss landscape: for small noise ΔNLL ≈ ½·tr(H·Σ_noise) grows with the noise
power, so the first feature is ln(noise power / signal power) = −SQNR·ln10/10.

The element's bit count P enters too (ln P, and per method): GPTQ's error compensation works on
the grid, not only on the noise level. Method: RTN vs GPTQ, and their interaction with the noise
(GPTQ removes part of it). Corpus is a
nuisance of the evaluation (C4 and PTB losses move more than WikiText-2's): fitted, then set to the
reference (WikiText-2) when the advisor asks.

Units: parameters and tokens as counts, SQNR in dB, ΔNLL in nats/token. numpy and pandas only.
"""

from __future__ import annotations

import math

import numpy as np

from registry.conformal import INTERVAL_BANDS, precision_bands

LN10 = math.log(10)
DELTA_FLOOR = 1e-3  # nats/token: the smallest ΔNLL fitted in log space (8-bit rows print equal ppl)
REFERENCE_CORPUS = "wikitext2"
# the linear prior's columns; the forest reads the same facts without hand-made interactions
LINEAR_FEATURES = ("noise", "noise_sq", "log_p", "gptq", "gptq_noise", "gptq_log_p", "log_n", "log_d", "d_missing",
                   "mx", "fp_element", "channel", "tensor", "gptq_channel", "corpus_c4", "corpus_ptb", "corpus_other")
# the forest also reads tokens per parameter, ln(D/N): the QiD law's claim (Ouyang et al. 2024) is that
# how far a model was trained past its size sets its quantization loss; a ridge already sums ln D and
# ln N freely, but a tree split on either alone cannot express their ratio (held out by family,
# 3-4-bit mean |ln error| 0.863 -> 0.849 over four forest seeds, docs/prior.md)
TREE_FEATURES = ("noise", "log_p", "gptq", "log_n", "log_d", "log_tpp", "d_missing", "mx", "fp_element", "channel",
                 "tensor", "corpus_c4", "corpus_ptb", "corpus_other")
# what a row of the prior's input frame holds (one per model × format × method)
FRAME_COLUMNS = ("non_embedding_params", "train_tokens", "method", "sqnr_db", "precision", "format_family",
                 "granularity", "corpus")
SQNR_KEY = ("family", "precision", "exp_bits", "man_bits", "granularity")


def element_key(facts: dict) -> tuple:
    """What a format is apart from its block/group size: SQNR is interpolated along K within it."""
    return tuple(facts.get(k) for k in SQNR_KEY)


def sqnr_lookup(table: list[dict], facts: dict) -> float:
    """The format's SQNR (dB) from `table` (rows with SQNR_KEY, block_size, name, sqnr_db).

    Exact name first; else the same element and granularity at other block sizes, interpolated
    linearly in log2 K (clamped at the ends); NaN when the table has no such element.
    """
    for row in table:
        if row["name"] == facts.get("name"):
            return float(row["sqnr_db"])
    key, k = element_key(facts), facts.get("block_size")
    same = sorted((r["block_size"], r["sqnr_db"]) for r in table if element_key(r) == key and r["block_size"])
    if not same or not k:
        return math.nan
    xs = np.log2([s[0] for s in same])
    return float(np.interp(math.log2(k), xs, [s[1] for s in same]))


def log_d_fill(train_tokens) -> float:
    """The value of ln(D / 10¹²) given to a model of unknown D: the median over models that state it."""
    tokens = np.asarray(train_tokens, dtype=float)
    known = tokens[np.isfinite(tokens) & (tokens > 0)]
    return float(np.median(np.log(known / 1e12))) if len(known) else 0.0


def design(frame, fill: float, names=LINEAR_FEATURES) -> np.ndarray:
    """The feature matrix (rows × names) of a frame with FRAME_COLUMNS."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the prior needs columns {missing}")
    noise = -frame["sqnr_db"].to_numpy(float) * LN10 / 10
    gptq = (frame["method"] == "gptq").to_numpy(float)
    tokens = frame["train_tokens"].to_numpy(float)
    unknown = ~(np.isfinite(tokens) & (tokens > 0))
    log_d = np.where(unknown, fill, np.log(np.where(unknown, 1.0, tokens) / 1e12))
    family, granularity = frame["format_family"].astype(str), frame["granularity"].astype(str)
    corpus = frame["corpus"].fillna(REFERENCE_CORPUS).astype(str)
    channel = (granularity == "channel").to_numpy(float)
    log_p = np.log(frame["precision"].to_numpy(float))
    log_n = np.log(frame["non_embedding_params"].to_numpy(float) / 1e9)
    columns = {
        "noise": noise, "noise_sq": noise ** 2, "log_p": log_p, "gptq": gptq, "gptq_noise": gptq * noise,
        "gptq_log_p": gptq * log_p,
        "log_n": log_n, "log_d": log_d, "log_tpp": log_d - log_n + math.log(1e12 / 1e9),
        "d_missing": unknown.astype(float), "mx": family.str.startswith("mx").to_numpy(float),
        "fp_element": (family == "mxfp").to_numpy(float), "channel": channel,
        "tensor": (granularity == "tensor").to_numpy(float), "gptq_channel": gptq * channel,
        "corpus_c4": (corpus == "c4").to_numpy(float), "corpus_ptb": (corpus == "ptb").to_numpy(float),
        "corpus_other": (~corpus.isin(["c4", "ptb", REFERENCE_CORPUS])).to_numpy(float),
    }
    return np.column_stack([columns[n] for n in names])


# Conformal groups by bit width, within each method. Split-conformal widths are only honest where a
# group's errors are alike: 2-bit RTN saturates (every model collapses to about the same loss, so its
# log errors are small) while 3-bit RTN collapses for some families and not others; pooled, the
# 3-bit rows got the 2-bit width and 77 % coverage. Each prior version records its bands.
LEGACY_BANDS = "p<=3,p>=4"  # versions fitted before the bands were recorded


def interval_groups(frame, bands: str = INTERVAL_BANDS) -> np.ndarray:
    """Per row, its conformal group: method / the first band of `bands` its bit count falls in."""
    label = precision_bands(frame["precision"].to_numpy(float), bands)
    return np.char.add(np.char.add(frame["method"].to_numpy(str), "/"), label)


def log_target(delta_nll) -> np.ndarray:
    """ln ΔNLL with ΔNLL floored at DELTA_FLOOR (nats/token): errors are multiplicative."""
    return np.log(np.maximum(np.asarray(delta_nll, dtype=float), DELTA_FLOOR))
