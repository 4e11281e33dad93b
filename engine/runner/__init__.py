"""How a stage runs: the detached driver, one worker process per stage, heartbeats, cancel, ranks."""
