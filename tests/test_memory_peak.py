"""benchmarks/memory_peak.py: its accounting of live tensors, and a run end to end on a tiny shape."""

import subprocess
import sys
from pathlib import Path

import torch
from torch.distributed._tools.mod_tracker import ModTracker

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_live_tensors_count_what_operations_allocate_while_it_lives(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from memory_peak import LiveTensors

    layer = torch.nn.Linear(256, 256)
    weights = layer.weight.untyped_storage().nbytes()
    with ModTracker() as modules, LiveTensors(modules, resolution=0) as live:
        x = torch.ones(1024, 256)  # 1 MiB, made by an operation
        view = x[:512].t()  # a view: no new memory
        y = layer(x)  # 1 MiB more; the weights it reads were made before and are not counted
        assert live.now == 2 * x.untyped_storage().nbytes() == 2 << 20
        del x, view
        assert live.now == 2 << 20  # autograd keeps x for the weight's gradient
        del y
        assert live.now == 0  # x's storage is freed with y's graph and its last view
        with torch.no_grad():
            z = layer(torch.ones(256, 256)) * 2  # 0.25 MiB each, the linear's output freed at once
        assert live.now == 1 << 18
        del z
    assert live.now == 0 and live.peak == 2 << 20 != (2 << 20) + weights
    made = {(op, shape) for _, op, _, shape, _, _ in live.at_peak}
    assert ("ones", (1024, 256)) in made and any(op in ("addmm", "linear") for op, _ in made)
    assert [where for *_, where, phase in live.at_peak if where != "Global"] == ["Linear"]  # the module running when y was made


def test_memory_peak_runs_end_to_end_on_a_tiny_shape():
    from harness.models import resolve_model

    result = subprocess.run([sys.executable, str(BENCHMARKS / "memory_peak.py"), "--tokenizer", resolve_model("smollm2-135m"), "--shape", "tiny",
                             "--pairs", "2", "--steps", "1", "--runs", "dpo,srpo-checkpointing-mb1", "--bf16"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "harness DPO, micro-batch 2, checkpointing off: tensors made by operations peak at" in out
    assert "harness SRPO, micro-batch 1, checkpointing on" in out and "backward" in out and "layers.*." in out
