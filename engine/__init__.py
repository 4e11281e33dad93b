"""The pipeline engine: config, run database, supervisor, workers and stages. Never imports `app`."""

import os

# OpenMP threads that run out of work sleep instead of spinning (a user's own OMP_WAIT_POLICY wins). torch's CPU
# kernels spin-wait by default, which is only free on an otherwise idle machine: with the panel, a second run, a
# sweep's next run or a test worker on the same cores, each spinning pool steals the cores the other needs. Measured
# on 2 cores: two demos at once took 660 s spinning and 76 s passive; one demo alone 73 s and 72 s. libgomp (Linux)
# and Intel's OpenMP (Windows) read it once, when torch loads, so it is set here, before any stage imports torch;
# every worker and rank inherits it. bench/cpu_contention.py measures it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
