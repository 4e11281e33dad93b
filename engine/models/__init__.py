"""Models: loading on Unsloth or HF + PEFT, the tiny demo model built from a config, LoRA merges."""
