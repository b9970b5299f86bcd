"""Answering from a registered prior (`prior.json`): ΔNLL with its interval, numpy and pandas only.

The document holds the fitted model (features.py, model.py), the conformal half-widths in log
space (one for models of known training tokens, a wider one for unknown), the per-format SQNR
table, and what the advisor cites beside a prediction: the published results on catalog models
(exact matches are answered from them, not predicted) and the published fp perplexities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from registry.prior.features import LEGACY_BANDS, REFERENCE_CORPUS, interval_groups, sqnr_lookup
from registry.prior.model import predict_log

SCHEMA = "ptq-advisor/prior/v1"
PRIOR = "ptq-prior"
# the evaluation corpus whose published rows answer first: the reference one, then the others
CORPUS_ORDER = (REFERENCE_CORPUS, "c4", "ptb")


def _corpus_rank(corpus) -> int:
    return CORPUS_ORDER.index(corpus) if corpus in CORPUS_ORDER else len(CORPUS_ORDER)


@dataclass
class LoadedPrior:
    """A registered prior ready to answer: its version and its JSON document."""

    name: str
    version: str
    params: dict
    run_id: str | None = None
    _by_variant: dict | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def cite(self) -> str:
        return f"{self.name}/{self.version}"

    def sqnr_db(self, facts: dict) -> float:
        """The format's SQNR (dB) on the synthetic weights; NaN when outside the stored table."""
        return sqnr_lookup(self.params["sqnr_table"], facts)

    def predict(self, frame):
        """DataFrame delta_nll, lower, upper (nats/token) for rows with features.FRAME_COLUMNS;
        rows of unknown training tokens get the wider interval."""
        import pandas as pd

        point = np.exp(predict_log(self.params["model"], frame))
        tokens = frame["train_tokens"].to_numpy(float)
        unknown = ~(np.isfinite(tokens) & (tokens > 0))
        groups = interval_groups(frame, self.params.get("interval_bands", LEGACY_BANDS))
        known_w, unknown_w = self.params["halfwidth_log"], self.params["halfwidth_log_unknown_d"]
        width = np.array([(unknown_w if u else known_w).get(g) for g, u in zip(groups, unknown)], dtype=float)
        width = np.where(np.isnan(width), np.inf, width)  # a group the prior never saw: no finite interval
        return pd.DataFrame({"delta_nll": point, "lower": point * np.exp(-width), "upper": point * np.exp(width),
                             "unknown_d": unknown}, index=frame.index)

    def published(self, model: str, fmt: str, method: str) -> dict | None:
        """The published result for exactly (model, format, method), reference corpus first."""
        if self._by_variant is None:  # recommend asks once per candidate: index the rows once
            self._by_variant = {}
            for r in self.params["published"]:
                self._by_variant.setdefault((r["model"], r["format"], r["method"]), []).append(r)
        hits = self._by_variant.get((model, fmt, method))
        return min(hits, key=lambda r: (_corpus_rank(r["corpus"]), -(r.get("seq_len") or 0))) if hits else None

    def fp_published(self, model: str) -> dict | None:
        """The model's published fp perplexity as NLL (nats/token), reference corpus first."""
        return self.params["fp_published"].get(model)


def published_index(rows, catalog_names) -> tuple[list[dict], dict]:
    """The published rows on catalog models in the prior's methods (exact matches), and per catalog
    model its fp NLL = ln(ppl_fp) from the reference corpus where printed (else another corpus)."""
    exact, fp = [], {}
    for r in rows:
        if r["model"] not in catalog_names:
            continue
        record = {"model": r["model"], "format": r.get("format"), "method": r["method"], "corpus": r["corpus"],
                  "seq_len": r.get("seq_len"), "delta_nll": r["delta_nll"], "ppl_fp": r["ppl_fp"],
                  "ppl_q": r["ppl_q"], "source": r["source"], "link": r["link"]}
        if r.get("format") and r["method"] in ("rtn", "gptq"):
            exact.append(record)
        best = fp.get(r["model"])
        key = (_corpus_rank(r["corpus"]), -(r.get("seq_len") or 0))
        if best is None or key < best["rank"]:
            fp[r["model"]] = {"nll": math.log(r["ppl_fp"]), "ppl": r["ppl_fp"], "corpus": r["corpus"],
                              "seq_len": r.get("seq_len"), "source": r["source"], "link": r["link"], "rank": key}
    return exact, {k: {f: v for f, v in d.items() if f != "rank"} for k, d in fp.items()}
