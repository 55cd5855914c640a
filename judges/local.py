"""What the judges that run a model in this process share (``local-lm``, ``reward-model``): where it
runs and in what precision, and batches grouped by length as large as the device allows
(``harness.batching``): on a GPU a forward waits on kernel launches whatever its rows."""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch

from harness.batching import batch_limits, length_batches
from harness.config import PositiveInt
from harness.errors import HarnessError
from harness.judge import Judge
from harness.models import inference_placement, model_ref, resolve_model


@dataclass
class LocalModelJudge(Judge):
    """Base of the judges that run a local model (not registered itself); a subclass's ``_load``
    sets ``_model`` and ``_tokenizer``."""

    not_in_verdicts: ClassVar[frozenset[str]] = frozenset({"batch_size", "max_batch_tokens", "device"})  # how texts are grouped and where they run; the precision the device leads to is in the key

    model: str = ""  # the judging model: a hub id or a local folder
    batch_size: PositiveInt | Literal["auto"] = "auto"  # texts per forward pass at most; "auto": 32 on a CPU, on a GPU up to 512, as many as max_batch_tokens holds
    max_batch_tokens: PositiveInt | Literal["auto"] = "auto"  # and at most this many padded tokens a forward; "auto": 4096 on a CPU, 65536 on a GPU
    device: Literal["auto", "cuda", "cpu"] = "auto"  # "auto": CUDA when present (bfloat16), else CPU

    def __post_init__(self):
        self._model = None
        self._scores: dict[bytes, float] = {}  # a digest of each token list scored -> its float, for the judge's life

    def describe_config(self) -> dict:
        return {**super().describe_config(),
                "dtype": inference_placement(self.device)[1],  # bfloat16 verdicts on a GPU are not float32 ones
                "weights": model_ref(self.model).__key__()}  # a local folder by its files, as training and generation name models: new weights there are a new judge  # fmt: skip

    @property
    def chunk_size(self) -> int:
        """Pairs per call of the judging stage: at least a batch's rows, so that a call's
        comparisons (two orders a pair) fill whole batches on any device."""
        return max(super().chunk_size, self._limits()[0])

    def check_access(self) -> None:
        resolve_model(self.model)  # a hub model out of reach ends the run before training, not at the judging stage

    def _limits(self) -> tuple[int, int]:
        return batch_limits(self.batch_size, self.max_batch_tokens, inference_placement(self.device)[0] == "cpu")

    def _batches(self, encoded: list[list[int]]) -> list[list[int]]:
        """Indices of the token lists ``encoded``, grouped by length within this device's limits."""
        return length_batches(list(map(len, encoded)), *self._limits())

    def _per_text(self, encoded: list[list[int]], score: Callable[[dict], list[float]]) -> list[float]:
        """One float per token list of ``encoded``, in its order: ``score`` reads a batch of them
        (padded as the tokenizer pads, on the model's device) and returns a float per row.

        Each distinct token list is scored once for the judge's life, so the same prompt gets the
        same float whatever it was batched with (padding changes a float's last bits, and a
        revision that repeats the text before it is a comparison judged already). ``stats`` counts
        what this call computed: forwards, and token lists not scored before."""
        keys = [hashlib.blake2b(array("q", tokens).tobytes(), digest_size=16).digest() for tokens in encoded]
        todo = list({key: tokens for key, tokens in zip(keys, encoded) if key not in self._scores}.items())
        self.stats = {"forward_passes": 0, "scored_texts": len(todo), "failed": 0}  # a local model answers every prompt
        try:
            for idx in self._batches([tokens for _, tokens in todo]):
                batch = self._tokenizer.pad({"input_ids": [todo[i][1] for i in idx]}, return_tensors="pt").to(self._model.device)
                for i, value in zip(idx, score(batch)):
                    self._scores[todo[i][0]] = value
                self.stats["forward_passes"] += 1
        except torch.cuda.OutOfMemoryError:  # the settings against the card: say which to lower
            raise HarnessError(f"out of accelerator memory in judge {self.registered_name!r}: lower --judge-arg max_batch_tokens (now "
                               f"{self.max_batch_tokens}) or batch_size (now {self.batch_size}); verdicts already written are kept") from None  # fmt: skip
        return [self._scores[key] for key in keys]
