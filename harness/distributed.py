"""The one process-group state every stage asks: which process am I, and am I the main one.

``accelerate launch`` starts the processes; on a machine without CUDA, accelerate forms a gloo
group only when asked for the CPU, so the state is always created with ``cpu`` set that way.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return state().is_main_process


def single_process() -> bool:
    """Not under a multi-process launch: the processes of one must all train, or none."""
    return state().num_processes == 1
