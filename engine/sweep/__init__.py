"""Sweeps: many runs from one config (a grid, random samples, or whole configs), queued on the GPU(s), ranked."""
