"""A tiny causal LM and tokenizer built on the spot: real transformers classes, no download."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Below is a news ARTICLE and the corresponding ID. Write a both precise and concise summary of the contents of the ARTICLE.",
    "ID: ARTICLE: TL;DR: EXAMPLE SUMMARY: SUBREDDIT: TITLE: POST: REQUEST: EXAMPLE RESPONSE:",
    "The council said the new bridge will open next year after a delay caused by flooding in the town.",
    "Police are appealing for witnesses after a car crashed into a shop on the high street on Sunday.",
    "The club confirmed the striker has signed a new three-year contract following a successful season.",
    "Scientists have found that the river is cleaner than at any time in the last fifty years.",
]


def build_tiny(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 32, bos: bool = False, spm: bool = False) -> Path:
    """Save a tiny Llama-architecture model and a BPE tokenizer to ``folder``: byte-level as GPT-2's
    and SmolLM2's, or with ``spm`` SentencePiece-style as Llama 2's ("▁" stands for a space and is
    put before a text's first word); with ``bos``, one that puts "<s>" before every text of its own
    accord, as Llama's and Gemma's do (SmolLM2's and Qwen's put nothing)."""
    import string

    import torch
    from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    special = ["<|endoftext|>", "<pad>", *(["<s>"] if bos else [])]
    if spm:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, min_frequency=1, special_tokens=special, initial_alphabet=[*string.printable, "▁"]))
    else:
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=special)
    if bos:
        bpe.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>", bos_token="<s>" if bos else None)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def xsum_files(folder: Path, n: int = 6) -> tuple[Path, Path]:
    """A test split and preference pairs in the xsum task's fields, written to ``folder``."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    articles = [f"The council said bridge number {i} will open next year after a delay." for i in range(n)]
    test, pairs = folder / "test.jsonl", folder / "pairs.jsonl"
    test.write_text("".join(json.dumps({"id": str(i), "article": a, "reference": f"Bridge {i} opens."}) + "\n" for i, a in enumerate(articles)))
    pairs.write_text("".join(json.dumps({"id": str(i), "article": a, "chosen": f"Bridge {i} opens.", "rejected": "Cats."}) + "\n" for i, a in enumerate(articles)))
    return test, pairs
