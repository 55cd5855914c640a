"""An LM policy: log pi(completion | context) for batches of preference pairs, prompt tokens masked.

Every sequence a method needs is a context followed by a completion. A context is one or two token
segments: the 0-revision prompt; or the revision prompt's part before the in-context completion
(the instruction and the whole source document) and the in-context part after it. Sequences that
share their first segment share its computation: the segment runs once, its key/value cache is
repeated for each continuation, and only the short continuations run per sequence. For SRPO's six
sequences that reads each document twice (0-revision and revision) instead of six times.

Only completion positions reach the LM head: hidden states are sliced first, so full-vocabulary
log-softmax is never materialised for prompt tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.method import LogProbs, parse_key
from harness.prompting import PromptFormatter, fill_in_context


@dataclass
class EncodedPair:
    prompt: list[int]  # 0-revision context
    revision_prefix: list[int]  # revision prompt up to the in-context completion
    in_context: dict[str, list[int]]  # side -> the in-context completion and the rest of the revision prompt
    completion: dict[str, list[int]]  # side -> completion tokens, EOS included
    index: int = 0  # position in the dataset (keys the cached reference log-probs)

    def sequence(self, key: str) -> tuple[list[list[int]], list[int]]:
        """(context segments, completion tokens) of a sequence key such as "chosen|rejected"."""
        side, in_context = parse_key(key)
        if in_context is None:
            return [self.prompt], self.completion[side]
        return [self.revision_prefix, self.in_context[in_context]], self.completion[side]

    def n_tokens(self, keys) -> int:
        return sum(sum(map(len, ctx)) + len(c) for ctx, c in map(self.sequence, keys))


@dataclass
class PairEncoder:
    formatter: PromptFormatter
    keys: tuple[str, ...]  # the sequence keys a method needs: only their parts are tokenized
    max_completion_tokens: int = 256  # training only: longer completions are cut (EOS then dropped)

    def encode(self, row: dict, index: int = 0) -> EncodedPair:
        tok = self.formatter.tokenizer
        ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        parsed = [parse_key(k) for k in self.keys]
        completion = {}
        for side in sorted({side for side, _ in parsed}):
            tokens = ids(self.formatter.completion(row[side])) + [tok.eos_token_id]
            completion[side] = tokens[: self.max_completion_tokens]
        prompt = ids(self.formatter.prompt(row)) if any(ctx is None for _, ctx in parsed) else []
        revision_prefix, in_context = [], {}
        in_context_sides = sorted({ctx for _, ctx in parsed if ctx is not None})
        if in_context_sides:
            before, after = self.formatter.revision_parts(row)
            revision_prefix = ids(before)
            in_context = {side: ids(fill_in_context(after, row[side])) for side in in_context_sides}
        return EncodedPair(prompt, revision_prefix, in_context, completion, index)


def completion_log_probs(hidden: torch.Tensor, targets: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    """Sum of log pi(target_t | hidden_t) over a completion: hidden [T, H], targets [T] -> scalar."""
    logits = lm_head(hidden).float()  # [T, V]: completion positions only
    return -nn.functional.cross_entropy(logits, targets, reduction="sum")


class SequenceScorer(nn.Module):
    """Wraps a causal LM so that one forward call scores every sequence of a micro-batch.

    Going through this module's forward (rather than calling the model's parts from outside) lets
    accelerate's DDP/FSDP wrapper see the computation and synchronise gradients."""

    def __init__(self, model: nn.Module, pad_token_id: int, share_prefixes: bool = True):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        self.share_prefixes = share_prefixes

    def forward(self, pairs: list[EncodedPair], keys: tuple[str, ...]) -> LogProbs:
        sums = {k: [] for k in keys}
        for pair in pairs:
            scored = self._score_shared(pair, keys) if self.share_prefixes else self._score_separately(pair, keys)
            for k in keys:
                sums[k].append(scored[k])
        counts = {k: torch.tensor([float(len(p.sequence(k)[1])) for p in pairs], device=self._device()) for k in keys}
        return LogProbs({k: torch.stack(v) for k, v in sums.items()}, counts)

    def _parts(self):
        return self.model.get_decoder(), self.model.get_output_embeddings()

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _score_shared(self, pair: EncodedPair, keys) -> dict[str, torch.Tensor]:
        decoder, lm_head = self._parts()
        device = self._device()
        groups: dict[tuple[int, ...], list[tuple[str, list[int], int]]] = {}
        for key in keys:
            segments, completion = pair.sequence(key)
            continuation = [t for seg in segments[1:] for t in seg] + completion
            groups.setdefault(tuple(segments[0]), []).append((key, continuation, len(completion)))
        out = {}
        for prefix, members in groups.items():
            prefix_ids = torch.tensor([prefix], device=device)  # [1, P]
            first = decoder(input_ids=prefix_ids, use_cache=True)
            cache = first.cache
            cache.batch_repeat_interleave(len(members))  # [n, heads, P, d] per layer, one copy per continuation
            width = max(len(c) for _, c, _ in members)
            conts = torch.full((len(members), width), self.pad_token_id, device=device)  # [n, L], right-padded
            for i, (_, cont, _) in enumerate(members):
                conts[i, : len(cont)] = torch.tensor(cont, device=device)
            # Right padding needs no mask: causal attention never lets a real token see a later pad.
            hidden = decoder(input_ids=conts, cache=cache, use_cache=True).last_hidden_state  # [n, L, H]
            last_prefix = first.last_hidden_state[0, -1]  # [H], predicts each continuation's first token
            for i, (key, cont, n_completion) in enumerate(members):
                start = len(cont) - n_completion  # completion's first index within the continuation
                # hidden state predicting continuation token t is at t-1 (t = 0: the prefix's last)
                rows = [last_prefix[None]] if start == 0 else []
                rows.append(hidden[i, max(start - 1, 0) : len(cont) - 1])
                h = torch.cat(rows)  # [n_completion, H]
                out[key] = completion_log_probs(h, torch.tensor(cont[start:], device=device), lm_head)
        return out

    def _score_separately(self, pair: EncodedPair, keys) -> dict[str, torch.Tensor]:
        """The plain way: each sequence in full, one padded batch (the reference for tests and benchmarks)."""
        decoder, lm_head = self._parts()
        device = self._device()
        seqs = []
        for key in keys:
            segments, completion = pair.sequence(key)
            seqs.append((key, [t for seg in segments for t in seg] + completion, len(completion)))
        width = max(len(s) for _, s, _ in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, device=device)  # [S, T], right-padded
        for i, (_, s, _) in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, device=device)
        hidden = decoder(input_ids=ids).last_hidden_state  # [S, T, H]
        return {
            key: completion_log_probs(hidden[i, len(s) - n - 1 : len(s) - 1], torch.tensor(s[len(s) - n :], device=device), lm_head)
            for i, (key, s, n) in enumerate(seqs)
        }
