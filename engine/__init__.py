"""The pipeline engine: config, run database, supervisor, workers and stages. Never imports `app`."""
