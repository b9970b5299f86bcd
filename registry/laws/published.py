"""The published coefficients (Ouyang et al. 2024): version 1 of `qid-law` and `loss16-law`.

Kept apart from the fitters so that seeding and answering never import scikit-learn.
"""

from __future__ import annotations

PUBLISHED_SOURCE = ("Ouyang et al. 2024, 'Low-Bit Quantization Favors Undertrained LLMs', "
                    "Figs 6 (QiD, Eq. 8) and 7 (16-bit loss, Eq. 3); Pythia suite; GPTQ at 2-4 bits")
PUBLISHED_QID = {"k": 0.017, "alpha": 0.2261, "beta": 0.5251, "gamma": 5.4967}
PUBLISHED_LOSS16 = {"Nc": 4.74e19, "Dc": 7.63e10, "alpha_N": 0.045, "alpha_D": 0.399}


def published_qid_law() -> dict:
    """The published GPTQ/Pythia QiD law as a law entry (no intervals were published)."""
    return {**PUBLISHED_QID, "intervals": {}, "n_rows": None, "source": PUBLISHED_SOURCE}


def published_loss16_law() -> dict:
    """The published Pythia 16-bit law as a law entry (no intervals were published)."""
    return {**PUBLISHED_LOSS16, "intervals": {}, "n_rows": None, "source": PUBLISHED_SOURCE}
