"""Producing data: quantize models, measure them, log runs."""
