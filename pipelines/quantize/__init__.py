"""Quantization core: formats, MX and classic-int RTN, whole-model application."""
