"""Resumable checkpoints: trainable weights, optimizer, scheduler, RNG states and the step.

Only trainable tensors are saved (the LoRA adapter, or every weight in full fine-tuning), so a
checkpoint of a LoRA run is megabytes, not a copy of the model. A checkpoint is written to a
temporary folder and renamed into place: a kill mid-write leaves the previous one intact.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken for a full disk


def save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, key: str) -> None:
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_tensors(
        {
            "key": key,
            "step": step,
            "trainable": trainable,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": _numpy_state(),
                "python": random.getstate(),
            },
        },
        tmp / "state.pt",
    )
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, model, optimizer, scheduler, key: str) -> int | None:
    """The step to resume after, or None when there is no checkpoint for this exact run (``key``)."""
    state = load_tensors(folder / "state.pt")
    if state is None or state.get("key") != key:
        return None  # none, or a checkpoint of other data or options: start over rather than mix them
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state((rng["numpy"]["kind"], np.array(rng["numpy"]["key"], dtype=np.uint32), *rng["numpy"]["rest"]))
    random.setstate(rng["python"])
    return int(state["step"])


def save_tensors(obj: dict, path: Path) -> None:
    """``torch.save``, whose writer reports a full disk as "unexpected pos 576 vs 534": raised as
    the OSError it is, so that the run ends saying so."""
    try:
        torch.save(obj, path)
    except RuntimeError as exc:
        if shutil.disk_usage(path.parent).free < FULL_BELOW:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def load_tensors(path: Path) -> dict | None:
    """What ``torch.save`` wrote to ``path`` as tensors, numbers, strings and containers of them,
    or None when the file is absent or holds anything else. Unpickled with ``weights_only``: a
    file copied from a neighbouring run folder (``Stage.copy_from_neighbour``) or written by an
    older version can run no code here; the caller recomputes what it held."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError):
        return None


def _numpy_state() -> dict:
    """numpy's global RNG state as plain numbers, which ``load_tensors`` reads back (its array of
    624 words is not among what ``weights_only`` unpickles)."""
    kind, key, *rest = np.random.get_state()
    return {"kind": kind, "key": key.tolist(), "rest": rest}
