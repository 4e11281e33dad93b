"""Evaluation and export: the battery, tournament ratings, model answers, merges, GGUF, commitment probes."""
