"""grpo.max_prompt_length really limits prompts: cut from the left, the question asked now kept."""

from __future__ import annotations

from engine.models.loading import load_tokenizer
from engine.training.prompt_fit import fit_prompt, fit_prompts, prompt_tokens


def test_prompts_are_cut_from_the_left_to_the_limit():
    tok = load_tokenizer("demo:tiny-qwen3")
    turns = [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "an old question " * 40},
        {"role": "assistant", "content": "an old answer " * 40},
        {"role": "user", "content": "What is the boiling point of water at sea level?"},
    ]
    assert prompt_tokens(tok, turns) > 60
    fitted = fit_prompt(tok, turns, 60)
    assert prompt_tokens(tok, fitted) <= 60
    assert fitted[0] == turns[0] and fitted[-1] == turns[-1]  # system kept, the oldest turns went first
    assert len(fitted) < len(turns)
    # One turn longer than the limit keeps its end.
    long = [{"role": "user", "content": "filler words " * 80 + "so what is the answer?"}]
    cut = fit_prompt(tok, long, 40)
    assert prompt_tokens(tok, cut) <= 40 and cut[0]["content"].endswith("so what is the answer?")
    # Prompts that fit are untouched, and the count of cut ones is reported.
    short = [{"role": "user", "content": "hi"}]
    rows, n = fit_prompts(tok, [{"prompt": short}, {"prompt": long}], 40)
    assert rows[0]["prompt"] == short and n == 1
