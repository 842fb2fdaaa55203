"""Evaluation: precision and stability metrics, statistics on loss matrices, and the selection."""
