"""Builds the demo tokenizer (byte-level BPE pre-tokenized exactly as Qwen2/Qwen3, Qwen3's special tokens and chat
template) into tokenizer/.

The pre-tokenizer is Qwen2's own (transformers' Qwen2Tokenizer, the regex of Qwen2/Qwen3's tokenizer.json, which
llama.cpp re-implements as its `qwen2` pre-tokenizer): NFC, then the regex split (single digits, letters with one
leading non-letter, punctuation runs, newlines), then byte-level without its own regex. So a GGUF labelled
`tokenizer.ggml.pre = qwen2` tokenizes in llama.cpp as it does in transformers.

Run once; the output is committed so no test or demo ever reaches a model hub.
"""

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

HERE = Path(__file__).parent
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# As in Qwen3, the think tags are added tokens but not special: decoding keeps them.
THINK = ["<think>", "</think>"]
VOCAB = 1024


def corpus():
    for line in (HERE / "traces.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for turn in row["turns"]:
            yield turn["content"]
        yield row["reasoning"]
        yield row["answer"]
    for path in sorted((HERE.parent / "prompts").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for turn in json.loads(line)["turns"]:
                yield turn["content"]


def qwen2_pipeline(tok: Tokenizer) -> None:
    """Qwen2/Qwen3's normalizer, pre-tokenizer and decoder, as in their tokenizer.json."""
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()


def main() -> None:
    from trl.chat_template_utils import qwen3_chat_template  # Qwen3's own template, verbatim

    tok = Tokenizer(models.BPE())
    qwen2_pipeline(tok)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    fast.chat_template = qwen3_chat_template
    fast.padding_side = "left"
    fast.save_pretrained(HERE / "tokenizer")
    print(f"vocab {len(fast)} -> {HERE / 'tokenizer'}")


if __name__ == "__main__":
    main()
