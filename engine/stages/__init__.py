"""Pipeline stages: each module has `run(ctx)` and runs inside a worker process."""
