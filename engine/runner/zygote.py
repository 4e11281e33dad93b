"""What the run's fork server imports once (Linux), so that every stage worker it forks starts with them loaded.

A stage worker spends about 10 CPU-seconds importing torch, transformers, PEFT and TRL (measured on 2 quiet cores:
10.7 s wall), and a run starts one worker per stage. The driver starts the fork server with its first stage
(engine.runner.procs.spawn_worker); the server imports this module once, and each worker is a fork of it: the
libraries are already in memory, shared copy-on-write. Nothing here runs a parallel region, so the forked children
start their own OpenMP pools. An import that fails here is left to the worker, which reports it as its own.
"""

from __future__ import annotations

import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

import peft  # noqa: F401
import trl  # noqa: F401
from trl import GRPOTrainer, SFTTrainer  # noqa: F401
