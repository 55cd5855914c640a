"""An LM policy: log pi(completion | context) for batches of preference pairs, prompt tokens masked.

Every sequence a method needs is a context followed by a completion. A context is one or two token
segments: the 0-revision prompt; or the revision prompt's part before the in-context completion
(the instruction and the whole source document) and the in-context part after it. Sequences that
share their first segment share its computation: the segment runs once and only the short
continuations run per sequence, either on copies of the segment's key/value cache or packed after
it in one row under a shared-prefix attention mask. For SRPO's six sequences that reads each
document twice (0-revision and revision) instead of six times.

Only completion positions reach the LM head: hidden states are sliced first, so full-vocabulary
log-softmax is never materialised for prompt tokens, and for completions one chunk of positions at
a time (``token_logprobs``). Every pair of a micro-batch is scored in the same forward passes (see
``SequenceScorer``).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from dataclasses import dataclass

import torch
from torch import nn

from harness.method import LogProbs, parse_key
from harness.prompting import PromptFormatter, fill_in_context, leading_tokens


@dataclass
class EncodedPair:
    sequences: dict[str, tuple[list[list[int]], list[int]]]  # key -> (context segments, completion tokens, EOS included)
    index: int = 0  # position in the dataset (keys the cached reference log-probs)

    def sequence(self, key: str) -> tuple[list[list[int]], list[int]]:
        """(context segments, completion tokens) of a sequence key such as "chosen|rejected": the
        0-revision prompt, or the revision prompt up to the in-context completion and the rest."""
        return self.sequences[key]

    def n_tokens(self, keys) -> int:
        return sum(sum(map(len, ctx)) + len(c) for ctx, c in map(self.sequence, keys))


@dataclass
class PairEncoder:
    """Each sequence a method needs as the tokens the model reads when it generates: the context and
    the completion tokenized as one text (as TRL's DPOTrainer tokenizes prompt and completion), then
    cut where the context's parts end. Tokenized apart, a part would start as a text starts, which a
    tokenizer may write differently than the same characters inside a text: Llama 2's puts "▁" before
    a part that opens on a new line, and Llama 3's writes ":" and the newline after it as one token.
    A token that spans a cut goes to the later part, so that sequences sharing a first part share
    only tokens wholly within it (``SequenceScorer`` shares first segments equal in their tokens)."""

    formatter: PromptFormatter
    keys: tuple[str, ...]  # the sequence keys a method needs: only their parts are tokenized
    max_completion_tokens: int = 256  # training only: longer completions are cut (EOS then dropped)

    @functools.cached_property
    def lead(self) -> list[int]:
        """What a context's first segment starts with, as generation's prompt does (Llama's BOS)."""
        return leading_tokens(self.formatter.tokenizer, self.formatter.templated)

    def _texts(self, row: dict) -> dict[str, tuple[list[str], str]]:
        """key -> (the context's parts, the completion) as text."""
        prompt = self.formatter.prompt(row) if any(parse_key(k)[1] is None for k in self.keys) else None
        revision = self.formatter.revision_parts(row) if any(parse_key(k)[1] for k in self.keys) else None
        texts = {}
        for key in self.keys:
            side, in_context = parse_key(key)
            parts = [prompt] if in_context is None else [revision[0], fill_in_context(revision[1], row[in_context])]
            texts[key] = parts, self.formatter.completion(row[side])
        return texts

    def encode(self, rows: list[dict], first_index: int = 0) -> list[EncodedPair]:
        """``rows`` as pairs, indexed from ``first_index``, each pair's sequences tokenized in one
        call with the other pairs' (a fast tokenizer spreads the texts over the CPU's cores)."""
        tok = self.formatter.tokenizer
        texts = [self._texts(row) for row in rows]
        flat = ["".join(parts) + completion for row in texts for parts, completion in row.values()]
        batch = tok(flat, add_special_tokens=False, return_offsets_mapping=True)
        encoded = iter(zip(batch["input_ids"], batch["offset_mapping"]))
        return [EncodedPair({key: self._split(parts, *next(encoded)) for key, (parts, _) in row.items()}, first_index + i) for i, row in enumerate(texts)]

    def _split(self, parts: list[str], ids: list[int], offsets: list[tuple[int, int]]) -> tuple[list[list[int]], list[int]]:
        """(context segments, completion tokens) of one sequence's tokens ``ids``: cut where each of
        the context's ``parts`` ends, a token that spans a cut going to the later part."""
        token_ends = [end for _, end in offsets]  # in characters, never decreasing
        cuts = [0, *(bisect.bisect_right(token_ends, at) for at in itertools.accumulate(map(len, parts)))]  # tokens wholly before each part's end
        segments = [ids[a:b] for a, b in itertools.pairwise(cuts)]
        segments[0] = self.lead + segments[0]
        completion = (ids[cuts[-1] :] + [self.formatter.tokenizer.eos_token_id])[: self.max_completion_tokens]
        # a revision template that opens with the previous completion has nothing before it: one segment then
        return [seg for seg in segments if seg], completion


LOGITS_AT_ONCE = 1 << 25  # logits (positions x vocabulary) one LM-head call makes: 128 MiB in float32


def token_logprobs(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) [T] from the hidden states [T, H] that predict each target.

    Positions go through the LM head and log-softmax in chunks of at most ``LOGITS_AT_ONCE`` logits,
    each chunk's logits recomputed in backward rather than kept (``torch.utils.checkpoint``): memory
    holds one chunk's [C, V] logits instead of all [T, V], which backward holds three float32 copies
    of (SRPO's six sequences of long completions over a 128k vocabulary would need tens of GB). The
    price is a second LM-head product per chunk. Logits that fit in one chunk (8 XSum DPO pairs
    with SmolLM2's vocabulary) are computed in one call, as before."""

    def chunk_logprobs(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -nn.functional.cross_entropy(lm_head(h).float(), t, reduction="none")

    size = max(1, LOGITS_AT_ONCE // lm_head.weight.shape[0])  # positions per chunk
    if hidden.shape[0] <= size:
        return chunk_logprobs(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    chunks = zip(hidden.split(size), targets.split(size))
    if not torch.is_grad_enabled():  # the reference pass: nothing is kept for backward anyway
        return torch.cat([chunk_logprobs(h, t) for h, t in chunks])
    # the head has no dropout: no random state to save and restore per chunk
    return torch.cat([checkpoint(chunk_logprobs, h, t, use_reentrant=False, preserve_rng_state=False) for h, t in chunks])


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean [N, Q, K] attention pattern as the 4D additive mask [N, 1, Q, K] transformers uses as
    given (building no mask of its own, and so never reading mask values back to the host)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def _right_padded(rows: list[list[int]], pad: int, device) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)  # [N, L]
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out.to(device)


def _grouped(sequences) -> tuple[list[list[int]], list[tuple[int, list[int], int]]]:
    """The distinct first segments (prefixes) of ``sequences``, in order, and per sequence: (its
    prefix's index, its continuation (the rest of its context, then its completion), where its
    completion starts in that continuation)."""
    prefixes: dict[tuple[int, ...], int] = {}
    members = []
    for _, _, segments, completion in sequences:
        g = prefixes.setdefault(tuple(segments[0]), len(prefixes))
        continuation = [t for seg in segments[1:] for t in seg] + completion
        members.append((g, continuation, len(continuation) - len(completion)))
    return [list(p) for p in prefixes], members


def _targets(members, device) -> torch.Tensor:
    """[T]: every completion token, sequence after sequence."""
    return torch.tensor([t for _, continuation, start in members for t in continuation[start:]], device=device)


class SequenceScorer(nn.Module):
    """Wraps a causal LM so that one forward call scores every sequence of a micro-batch.

    All pairs of a micro-batch go through the model together, in one of three ways
    (``TrainConfig.prefix_sharing``), each ending in one LM-head pass over every completion position:
    - "packed": a row per distinct prefix holding the prefix and then each of its continuations,
      with a shared-prefix attention mask (a continuation sees its prefix and, causally, itself)
      and positions that each continue the prefix's; on an accelerator every row in one padded
      forward, on a CPU each row alone (``pad_prefixes``). No KV cache is involved, so it is the
      way that shares prefixes under gradient checkpointing (transformers turns the cache off
      there); its attention is computed over the whole row, masked parts included.
    - "cache": one forward of every distinct prefix (left-padded, so each ends at the same column),
      its key/value cache repeated for each continuation, one forward of every continuation
      (right-padded, attending to its own prefix through the attention mask, with positions that
      continue the prefix's). On a CPU each prefix and its continuations go alone, unpadded
      (``pad_prefixes``), so that the prefix gets the unmasked causal attention kernel.
    - "none": every sequence in full, all in one right-padded forward.
    Going through this module's forward (rather than calling the model's parts from outside) lets
    accelerate's DDP/FSDP wrapper see the computation."""

    def __init__(self, model: nn.Module, pad_token_id: int, sharing: str = "packed", pad_prefixes: bool | None = None):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        self.sharing = sharing  # "packed", "cache" or "none" (TrainConfig.prefix_sharing)
        self.pad_prefixes = pad_prefixes  # rows ("packed") or prefixes ("cache") of a micro-batch in one padded forward; None: on accelerators, not on CPUs

    def forward(self, pairs: list[EncodedPair], keys: tuple[str, ...]) -> LogProbs:
        device = self._device()
        sequences = [(i, key, *pair.sequence(key)) for i, pair in enumerate(pairs) for key in keys]  # (pair, key, segments, completion)
        score = {"packed": self._packed, "cache": self._shared, "none": self._separate}[self.sharing]
        hidden, targets = score(sequences, device)
        _, lm_head = self._parts()
        logp = token_logprobs(lm_head, hidden, targets)  # [T]: every completion token of the micro-batch
        lengths = torch.tensor([len(s[3]) for s in sequences], device=device)
        owner = torch.tensor([i for i, s in enumerate(sequences) for _ in s[3]], device=device)  # [T]: the sequence each token belongs to (built on the host: no sync)
        per_sequence = torch.zeros(len(sequences), device=device, dtype=logp.dtype).index_add(0, owner, logp)  # [S]
        sums = per_sequence.view(len(pairs), len(keys))  # [B, K]: sequences were laid out pair by pair, key by key
        counts = lengths.view(len(pairs), len(keys)).float()
        return LogProbs({k: sums[:, j] for j, k in enumerate(keys)}, {k: counts[:, j] for j, k in enumerate(keys)})

    def _parts(self):
        return self.model.get_decoder(), self.model.get_output_embeddings()

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _mask_dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def _blocks(self, n: int, device: torch.device) -> list[list[int]]:
        """Which of ``n`` prefixes (or packed rows) go through the model together. On an accelerator
        all in one padded forward; on a CPU, whose cores a single sequence already fills, each alone:
        no padding to compute (and, for a lone prefix, the unmasked causal attention kernel)."""
        together = self.pad_prefixes if self.pad_prefixes is not None else device.type != "cpu"
        return [list(range(n))] if together else [[g] for g in range(n)]

    def _shared(self, sequences, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states [T, H] predicting every completion token, and those tokens [T]."""
        rows, members = _grouped(sequences)
        pieces: list[list[torch.Tensor]] = [[] for _ in members]
        for block in self._blocks(len(rows), device):
            chosen = [c for c, m in enumerate(members) if m[0] in block]
            local = {g: i for i, g in enumerate(block)}
            block_pieces = self._prefix_block([rows[g] for g in block], [(local[members[c][0]], *members[c][1:]) for c in chosen], device)
            for c, piece in zip(chosen, block_pieces):
                pieces[c] = piece
        return torch.cat([p for piece in pieces for p in piece]), _targets(members, device)

    def _prefix_block(self, rows: list[list[int]], members: list[tuple[int, list[int], int]], device) -> list[list[torch.Tensor]]:
        """Prefixes ``rows`` in one forward, then every continuation of ``members`` (prefix index,
        continuation, completion start) in one forward on a copy of its prefix's cache; returns,
        per member, the hidden states that predict its completion tokens."""
        decoder, _ = self._parts()
        width = max(map(len, rows))
        padded = any(len(row) != width for row in rows)
        group = torch.tensor([g for g, _, _ in members], device=device)  # [C]
        conts = _right_padded([c for _, c, _ in members], self.pad_token_id, device)  # [C, L]
        length = conts.shape[1]
        if padded:
            prefix_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)  # [G, P], left-padded
            for i, row in enumerate(rows):
                prefix_ids[i, width - len(row) :] = torch.tensor(row)
            real = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).to(device)  # [G, P]
            dtype = self._mask_dtype()
            causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()  # [P, P]
            # a pad query attends to itself only: no row is fully masked (a NaN there would reach real tokens through 0 * NaN)
            allowed = (causal & real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)  # [G, P, P]
            prefix_args = {"attention_mask": _additive(allowed, dtype), "position_ids": (real.long().cumsum(1) - 1).clamp(min=0)}
            # a continuation token sees its prefix's real tokens and, causally, its own continuation (its right pads come later)
            own = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [L, L]
            allowed = torch.cat([real[group][:, None, :].expand(-1, length, -1), own.expand(len(members), -1, -1)], dim=2)  # [C, L, P + L]
            positions = real.sum(dim=1)[group, None] + torch.arange(length, device=device)  # [C, L]: continuing the prefix
            cont_args = {"attention_mask": _additive(allowed, dtype), "position_ids": positions}
        else:  # no padding: plain causal attention, positions counted from the cache
            prefix_ids = torch.tensor(rows, device=device)
            prefix_args, cont_args = {}, {}
        first = decoder(input_ids=prefix_ids.to(device), use_cache=True, **prefix_args)
        cache = first.cache
        cache.reorder_cache(group)  # [C, heads, P, d] per layer: each continuation's own copy of its prefix
        hidden = decoder(input_ids=conts, cache=cache, use_cache=True, **cont_args).last_hidden_state  # [C, L, H]
        last_prefix = first.last_hidden_state[:, -1]  # [G, H]: predicts each continuation's first token
        out = []
        for c, (g, continuation, start) in enumerate(members):
            piece = [last_prefix[g : g + 1]] if start == 0 else []  # the completion's first token follows the prefix's last position
            piece.append(hidden[c, max(start - 1, 0) : len(continuation) - 1])
            out.append(piece)
        return out

    def _packed(self, sequences, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each distinct prefix and its continuations as one row under a shared-prefix mask; hidden
        states [T, H] predicting every completion token, and those tokens [T]."""
        prefixes, members = _grouped(sequences)
        tokens = [list(p) for p in prefixes]  # per row: the prefix, then each continuation
        segments = [[0] * len(p) for p in prefixes]  # per row: 0 for the prefix, k for its k-th continuation
        positions = [list(range(len(p))) for p in prefixes]  # per row: each continuation's positions continue the prefix's
        where = []  # per completion token: (row, column of the hidden state predicting it)
        for r, continuation, start in members:
            prefix, offset = len(prefixes[r]), len(tokens[r])
            segments[r] += [segments[r][-1] + 1] * len(continuation)
            tokens[r] += continuation
            positions[r] += range(prefix, prefix + len(continuation))
            # the completion's first token follows the prefix's last position when nothing comes between
            where += [(r, offset + i if i >= 0 else prefix - 1) for i in range(start - 1, len(continuation) - 1)]
        flat, row_start, done = [], {}, 0  # every block's hidden states as [rows * width, H]; where each row begins in them
        for block in self._blocks(len(tokens), device):
            hidden = self._packed_forward([tokens[r] for r in block], [segments[r] for r in block], [positions[r] for r in block], device)
            row_start.update({r: done + i * hidden.shape[1] for i, r in enumerate(block)})
            flat.append(hidden.flatten(0, 1))
            done += hidden.shape[0] * hidden.shape[1]
        index = torch.tensor([row_start[r] + column for r, column in where], device=device)  # [T]
        return torch.cat(flat)[index], _targets(members, device)

    def _packed_forward(self, tokens: list[list[int]], segments: list[list[int]], positions: list[list[int]], device) -> torch.Tensor:
        """One decoder forward of packed rows (right-padded); their hidden states [R, W, H]."""
        decoder, _ = self._parts()
        seg = _right_padded(segments, -1, device)  # [R, W]; -1 marks padding
        causal = torch.ones(seg.shape[1], seg.shape[1], dtype=torch.bool, device=device).tril()  # [W, W]
        # a query sees a key before it in its own segment or in the prefix; a pad sees the prefix and pads,
        # so that no row of the mask is empty (a NaN there would reach real tokens through 0 * NaN)
        allowed = causal & ((seg[:, None, :] == seg[:, :, None]) | (seg[:, None, :] == 0))  # [R, W, W]
        return decoder(
            input_ids=_right_padded(tokens, self.pad_token_id, device), attention_mask=_additive(allowed, self._mask_dtype()),
            position_ids=_right_padded(positions, 0, device), use_cache=False,
        ).last_hidden_state

    def _separate(self, sequences, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain way, each sequence in full, all in one right-padded batch (the reference for
        tests and benchmarks)."""
        decoder, _ = self._parts()
        full = [[t for seg in segments for t in seg] + completion for _, _, segments, completion in sequences]
        hidden = decoder(input_ids=_right_padded(full, self.pad_token_id, device)).last_hidden_state  # [S, T, H]
        pieces, targets = [], []
        for s, (row, (_, _, _, completion)) in enumerate(zip(full, sequences)):
            pieces.append(hidden[s, len(row) - len(completion) - 1 : len(row) - 1])
            targets.extend(completion)
        return torch.cat(pieces), torch.tensor(targets, device=device)
