"""Judging traces on the nine dimensions: the prompt, the strict parser, the heuristic judge and the LLM judge."""
