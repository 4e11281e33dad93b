"""Training: model loading, the TRL trainer glue, callbacks, reward functions, training data, VRAM."""
