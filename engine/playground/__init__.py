"""The playground: put one's own question to the run's models side by side, each answer judged and kept.

`specs` and `client` are light (the panel imports them); `engines` and `worker` load models and run only in the
chat worker process (`python -m engine.playground.worker RUN_DIR`).
"""
