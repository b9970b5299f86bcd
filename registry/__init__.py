"""Versioned knowledge: fitted predictors and laws in the MLflow Model Registry."""
