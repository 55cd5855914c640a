"""Batches of token sequences for a local model: grouped by length, within a row limit and a budget
of padded tokens. The transformers engine and the local judges (``local-lm``, ``reward-model``)
batch this way.

Padding a batch to its longest row is work for nothing: on a CPU a forward is compute-bound, so
a long-document batch costs its padded tokens. On an accelerator a forward (or a decoding step)
of a small model waits on kernel launches whatever its rows, so batches there are as large as
the budgets allow: each launch then serves more rows.
"""

from __future__ import annotations

# What "auto" means, as (rows, padded tokens) a batch:
CPU_LIMITS = (32, 4096)  # a CPU: long prompts in small batches, whose prefill is most of the cost
ACCELERATOR_LIMITS = (512, 1 << 16)  # an accelerator: as many rows as 65,536 tokens hold, up to 512 (short prompts)


def batch_limits(batch_size: int | str, max_batch_tokens: int | str, cpu: bool) -> tuple[int, int]:
    """(rows, padded tokens) a batch may hold: the options as given, "auto" as above."""
    rows, tokens = CPU_LIMITS if cpu else ACCELERATOR_LIMITS
    return (rows if batch_size == "auto" else batch_size), (tokens if max_batch_tokens == "auto" else max_batch_tokens)


def length_batches(lengths: list[int], rows: int, tokens: int, multiple: int = 1, new_tokens: int = 0, cache_tokens: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` grouped shortest first, each group within ``rows`` sequences and
    ``tokens`` padded tokens (its longest length, rounded up to ``multiple``, times its rows) and,
    when ``cache_tokens`` is given, within that many tokens of KV cache (each row its padded length
    and ``new_tokens`` generated after it). A sequence longer than the budget goes alone."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        current = batches[-1] if batches else None
        width = -(-lengths[i] // multiple) * multiple  # the batch's padded width: its longest sequence, which is this one
        fits = (current is not None and len(current) < rows and (len(current) + 1) * width <= tokens
                and (cache_tokens is None or (len(current) + 1) * (width + new_tokens) <= cache_tokens))  # fmt: skip
        if fits:
            current.append(i)
        else:
            batches.append([i])
    return batches
