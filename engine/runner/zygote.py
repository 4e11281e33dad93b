"""What the run's fork server imports once (Linux), so that every stage worker it forks starts with them loaded.

A stage worker spends about 10 CPU-seconds importing torch, transformers, PEFT and TRL (measured on 2 quiet cores:
10.7 s wall), and a run starts one worker per stage. The driver starts the fork server with its first stage
(engine.runner.procs.spawn_worker); the server imports this module once, and each worker is a fork of it: the
libraries are already in memory, shared copy-on-write. Nothing here runs a parallel region, so the forked children
start their own OpenMP pools. An import that fails here is left to the worker, which reports it as its own.

Nothing that reads the environment when it is imported may be imported here: the worker sets the run's tracker
folders before it imports the trainers (trackio fixes TRACKIO_DIR on import, and TRL's trainer classes import
trackio), and Unsloth must come before transformers (a run that asks for it is not forked). tests/test_zygote.py
holds this module to that. The trainer classes cost 0.7 s of the 9 s.
"""

from __future__ import annotations

import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

import peft  # noqa: F401
import trl  # noqa: F401  (not its trainer classes: see above)
