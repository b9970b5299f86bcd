"""Measurements of a (quantized) model: SQNR, NLL."""
