"""The harness's DPO and IPO against TRL's DPOTrainer, its SimPO against TRL's CPOTrainer
(``benchmarks/trl_parity.py``): on a tiny model, with the same pairs, LoRA start, optimizer and
schedule, both trainers compute the same reference log-probs, the same loss at every step and the
same trained weights, however the harness shares prefixes, splits the step into micro-batches or
recomputes activations."""

import json
from pathlib import Path

import pytest
from tiny import xsum_files

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
WAYS = {  # how the harness computes a step; TRL scores every sequence in full, all pairs in one batch
    "packed prefixes, one pair a forward": {"prefix_sharing": "packed", "micro_batch_size": 1},
    "KV-cache prefixes, two pairs a forward": {"prefix_sharing": "cache", "micro_batch_size": 2},
    "no sharing, every pair in one forward, checkpointed": {"prefix_sharing": "none", "micro_batch_size": 6, "gradient_checkpointing": True},
}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("method", ["dpo", "ipo", "simpo"])
def test_the_harness_trains_as_trl_does(tiny, tmp_path, monkeypatch, method, way):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from trl_parity import compare

    _, pairs = xsum_files(tmp_path / "data", n=6)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    result = compare(tiny, rows, method, steps=4, lr=5e-3, folder=tmp_path, **WAYS[way])
    if method != "simpo":  # SimPO is reference-free
        assert result["reference_diff"] < 1e-4  # log-probs near -70: float32 rounding, where one token more or less moves them by whole units
    ours, theirs = result["harness_losses"], result["trl_losses"]
    assert len(ours) == len(theirs) == 4 and ours[-1] < ours[0]  # the weights moved
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-6)  # SimPO's beta of 50 scales the log-probs' float rounding fifty-fold
    assert result["weight_diff"] < 1e-3  # of the norm of a layer's trained update B A, after four steps


def test_a_raw_prompt_starts_with_the_bos_its_tokenizer_adds_as_in_trl(tiny_bos, tmp_path, monkeypatch):
    """Llama's and Gemma's tokenizers put a BOS before every text, and TRL's DPOTrainer tokenizes a
    raw prompt with it (as vLLM and llama.cpp servers do): the harness scores the same tokens."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from trl_parity import compare

    _, pairs = xsum_files(tmp_path / "data", n=4)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    result = compare(tiny_bos, rows, "dpo", steps=2, lr=5e-3, folder=tmp_path, **WAYS["packed prefixes, one pair a forward"])
    assert result["reference_diff"] < 1e-4
    assert result["harness_losses"] == pytest.approx(result["trl_losses"], rel=1e-4, abs=1e-6)
