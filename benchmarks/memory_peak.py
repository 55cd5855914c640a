"""What is alive at a training run's memory peak, and which operation in which module made it.

    python benchmarks/memory_peak.py --tokenizer DIR [--shape llama-1b] [--layers N] [--pairs 8]
        [--runs dpo,dpo-checkpointing,trl] [--lora-dropout 0.0] [--bf16]

``benchmarks/gpu.py`` measures each trainer's peak; this takes the peak apart, on a GPU or a CPU
alike. A dispatch mode sees every tensor an operation allocates (activations saved for backward,
temporaries, logits, gradients, optimizer state), but not the weights read from disk, and
``ModTracker`` names the module that was running and whether in the forward or the backward pass.
For each run it prints the peak of those tensors, what held it by operation, module and pass, and the
largest tensors; on CUDA also ``torch.cuda.max_memory_allocated``, whose excess over weights and the
tracked peak is memory no operation returned (kernel workspaces, the allocator's rounding).

The model and data are gpu.py's (a random-weight shape, XSum pairs, LoRA r16/alpha 32 on every
linear layer). ``--layers`` cuts the shape's depth, so that a CPU probes the 1B shape's per-layer
memory in a minute; ``--bf16`` forces bf16 autocast on a CPU (the GPU's default). Runs are the
harness's methods (``dpo``, ``srpo``; ``-checkpointing`` turns gradient checkpointing on, ``-mb1``
scores one pair per forward instead of all) and ``trl`` / ``trl-checkpointing`` (TRL's DPOTrainer;
needs the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import weakref
from pathlib import Path

import torch
from torch.distributed._tools.mod_tracker import ModTracker
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (the shapes, the data and the runs themselves)

GB = 1e9
WRAPPERS = {"SequenceScorer", "PeftModelForCausalLM", "base_model", "model"}  # module names around the LM's own: left out


class LiveTensors(TorchDispatchMode):
    """Bytes of the storages that operations allocated and that are still alive; at the peak, what
    each of them is: (operation, dtype, shape, module, pass). The snapshot is retaken only when the
    peak has grown by ``resolution`` bytes (walking every live tensor at each new peak is slow), so
    it may miss that much of it."""

    def __init__(self, modules: ModTracker, resolution: int = 16 << 20):
        super().__init__()
        self.modules, self.resolution = modules, resolution
        self.live: dict[int, tuple] = {}  # id(storage) -> (bytes, operation, dtype, shape, module, pass)
        self.now = self.peak = 0
        self.at_peak: list[tuple] = []

    def _freed(self, key: int) -> None:
        self.now -= self.live.pop(key)[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            if storage.nbytes() == 0 or storage.data_ptr() in inputs or id(storage) in self.live:
                continue  # a view or an in-place result: no new memory
            self.live[id(storage)] = (storage.nbytes(), func.overloadpacket.__name__, str(t.dtype).removeprefix("torch."), tuple(t.shape), *self._where())
            self.now += storage.nbytes()
            weakref.finalize(storage, self._freed, id(storage))
        if self.now > self.peak:
            if self.now >= self.peak + self.resolution or not self.at_peak:
                self.at_peak = list(self.live.values())
            self.peak = self.now
        return out

    def _where(self) -> tuple[str, str]:
        """The innermost running module (inside the wrappers, its layer number as * so that layers add
        up) and the pass."""
        names = max(self.modules.parents - {"Global"}, key=len, default="Global").split(".")
        while len(names) > 1 and names[0] in WRAPPERS:
            names.pop(0)
        return re.sub(r"\.\d+\.", ".*.", ".".join(names)), "backward" if self.modules.is_bw else "forward"


def measure(name: str, model: str, rows: list[dict], steps: int, bf16: bool, lora_dropout: float) -> dict:
    """One run of ``name`` (a trainer, then optionally -checkpointing and -mbN) under the tracker."""
    trainer, *flags = name.split("-")
    checkpointing = "checkpointing" in flags
    micro = next((int(f[2:]) for f in flags if f.startswith("mb")), len(rows))
    with ModTracker() as modules, LiveTensors(modules) as live:
        if trainer == "trl":
            result = gpu.trl_step(model, rows, steps, checkpointing, bf16=bf16, lora_dropout=lora_dropout)
        else:
            result = gpu.harness_step(model, trainer, rows, micro, steps, checkpointing=checkpointing, bf16=bf16, lora_dropout=lora_dropout)
    return {**result, "tracked_peak": live.peak, "at_peak": live.at_peak}


def report(run: dict, weights: int, top: int) -> None:
    checkpointing = "on" if run["gradient_checkpointing"] else "off"
    device = f"; torch.cuda.max_memory_allocated {run['peak_gb']:.2f} GB" if run["peak_gb"] is not None else ""
    note = f" ({run['note']})" if run.get("note") else ""
    print(f"\n{run['trainer']}, micro-batch {run['micro_batch_size']}, checkpointing {checkpointing}{note}: "
          f"tensors made by operations peak at {run['tracked_peak'] / GB:.3f} GB (weights {weights / GB:.2f} GB{device})")  # fmt: skip
    groups: collections.Counter = collections.Counter()
    for size, op, dtype, _, module, phase in run["at_peak"]:
        groups[(op, dtype, module, phase)] += size
    print("  held at the peak, by operation, dtype, module and pass:")
    for (op, dtype, module, phase), size in groups.most_common(top):
        print(f"    {size / GB:7.3f} GB  {op} {dtype}  {module}  {phase}")
    print("  largest tensors:")
    for size, op, dtype, shape, module, phase in sorted(run["at_peak"], reverse=True)[:top]:
        print(f"    {size / GB:7.3f} GB  {op} {dtype} {list(shape)}  {module}  {phase}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a folder with the tokenizer files (e.g. the converted SmolLM2's)")
    parser.add_argument("--shape", choices=sorted(gpu.SHAPES), default="llama-1b")
    parser.add_argument("--layers", type=int, help="this many layers instead of the shape's")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step, all in one micro-batch")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", default="dpo,dpo-checkpointing,trl-checkpointing",
                        help="comma-separated: dpo, srpo or trl, each optionally with -checkpointing and (not trl) -mbN, N pairs per forward")  # fmt: skip
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="gpu.py's 0.0; the harness's default is 0.05")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on a CPU too (on a GPU it is the default)")
    parser.add_argument("--top", type=int, default=12, help="lines per list")
    args = parser.parse_args()
    bf16 = args.bf16 or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    shape = {**gpu.SHAPES[args.shape], **({"num_hidden_layers": args.layers} if args.layers else {})}
    with tempfile.TemporaryDirectory() as folder:
        model = gpu.build_model(shape, args.tokenizer, Path(folder) / "model")
        weights = sum(f.stat().st_size for f in Path(model).glob("*.safetensors"))
        rows = gpu.xsum_pairs(args.pairs)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        print(f"device: {device}; random-weight {args.shape} with {shape['num_hidden_layers']} layers; {args.pairs} XSum pairs per step; "
              f"bf16 {'on' if bf16 else 'off'}; LoRA dropout {args.lora_dropout}", flush=True)  # fmt: skip
        for name in args.runs.split(","):
            report(measure(name, model, rows, args.steps, bf16, args.lora_dropout), weights, args.top)


if __name__ == "__main__":
    main()
