"""Named defaults for ``harness run``: a layer below the config file and the flags.

- ``offline`` (the default for text tasks): what runs in minutes on a 2-core laptop with no GPU,
  key or network: SmolLM2-135M-Instruct, 16 test examples, 16 gold-vs-policy pairs built from
  held-out test examples, revisions 0..2, the local proxy judge.
- ``paper``: the paper's protocol (Sec. 6 and Appendix D; ../shared/DESIGN.md), per task family.
  TL;DR/XSum: LLaMA-7B, SFT on TL;DR, preference training on TL;DR comparisons, XL-Sum with
  titles for "XSum", revisions 0..5, AlpacaFarm's annotator (``alpaca_farm_greedy_gpt4``, read from
  the alpaca-eval package) with gpt-4-0613 as judge. The paper's uncertainty (20 resamples of
  512 of the first 1,024) is always reported beside the headline interval (harness/scoring.py).
  Arena-Hard: LLaMA-3.1-8B base, SFT on ShareGPT's first exchanges (``tasks/sharegpt.py``), then
  trained on UltraFeedback with average log-likelihood, gpt-4o as judge (with the harness's own
  chat prompt, not Arena-Hard's judge prompt) against Llama-3.1-8B-Instruct's answers over all 500
  prompts (supply them: model_answer/Llama-3.1-8B-Instruct.jsonl in data_dir, or reference_file).
"""

from __future__ import annotations

import copy

from harness.config import dotted
from harness.errors import HarnessError

OFFLINE = {
    "limit": 16,  # test examples judged per revision
    "build_pairs": 16,  # XSum ships no preference split: gold vs the base model's summary, held-out examples
    "revisions": 2,
    "task_args": {"max_source_tokens": 320},  # long articles cut: on a CPU, prompt tokens are most of the cost
    "train": {"lr": 3e-5, "epochs": 1, "batch_size": 4},  # moves the LoRA in 4 steps; 1e-4 made SmolLM2 repeat itself
    "sampling": {"max_new_tokens": 48},
    "judge": "local-lm",
}

SUMMARY_PAPER = {
    "model": "huggyllama/llama-7b",
    "train_task": "tldr",
    "sft": {"lr": 2e-5, "epochs": 2, "batch_size": 64, "warmup_ratio": 0.03, "weight_decay": 0.1, "schedule": "cosine", "lora": False},
    "train": {
        "lr": 2e-6, "epochs": 5, "batch_size": 128, "warmup_steps": 150, "weight_decay": 0.1, "schedule": "cosine",
        "dpo": {"lr": 1e-6, "schedule": "constant"}, "rpo": {"lr": 1e-6, "schedule": "constant"},
    },  # fmt: skip
    "method_args": {"srpo": {"beta": 0.01}, "ipo": {"beta": 0.01}, "dpo": {"beta": 0.1}, "rpo": {"beta": 0.1}},
    "revisions": 5,
    "sampling": {"max_new_tokens": 128},
    "judge": "alpaca-eval",  # the paper's: AlpacaFarm's GPT-4 annotator, from AlpacaEval's own config files
    "judge_args": {"annotator": "alpaca_farm_greedy_gpt4", "model": "gpt-4-0613"},
}

CHAT_PAPER = {
    "model": "meta-llama/Llama-3.1-8B",
    "sft_task": "sharegpt",
    "sft": {"lr": 2.5e-5, "min_lr_ratio": 0.5, "schedule": "cosine", "warmup_steps": 10, "batch_size": 64, "epochs": 1, "lora": False},
    "train_task": "ultrafeedback",
    "train": {"lr": 1.25e-6, "min_lr_ratio": 0.1, "schedule": "cosine", "warmup_steps": 128, "batch_size": 32, "epochs": 1},
    "method_args": {"average_log_prob": True, "srpo": {"beta": 1.3}, "ipo": {"beta": 1.0}, "dpo": {"beta": 10.0}, "rpo": {"beta": 10.0}, "simpo": {"beta": 50.0}},
    "task_args": {"reference_model": "Llama-3.1-8B-Instruct"},
    "revisions": 5,
    "sampling": {"max_new_tokens": 1024},
    "judge": "openai",
    "judge_args": {"model": "gpt-4o"},
}

DESCRIPTIONS = {
    "offline": "the default for text tasks: minutes on a 2-core CPU with no GPU, key or network; its judge is a proxy",
    "paper": "the paper's protocol (Sec. 6 and Appendix D; ../shared/DESIGN.md): GPUs, the paper's judge and its API key",
}
PRESETS = tuple(DESCRIPTIONS)
PAPER_PROTOCOLS = (("xsum", "tldr"), ("arena-hard", "ultrafeedback"))  # the tasks of the paper's summary and chat protocols


def preset_layer(name: str | None, task_name: str | None, task_kind: str | None) -> dict:
    """The config layer of preset ``name`` for ``task_name`` (None: the default for its kind)."""
    if task_kind != "text":
        if name not in (None, "offline"):
            raise HarnessError(f"preset {name!r} is for text tasks; task {task_name!r} has its own protocol defaults")
        return {}
    name = name or "offline"
    if name == "offline":
        return copy.deepcopy(OFFLINE)
    if name == "paper":
        if task_name in ("xsum", "tldr"):
            layer = copy.deepcopy(SUMMARY_PAPER)
            if task_name == "xsum":
                layer["task_args"] = {"variant": "xlsum"}  # the paper's "XSum" is XL-Sum English, with titles
            return {**layer, "limit": _paper_items(task_name)}
        if task_name in ("arena-hard", "ultrafeedback"):
            layer = copy.deepcopy(CHAT_PAPER)  # no limit: Arena-Hard's paper_items are all its prompts
            if task_name != "arena-hard":
                layer.pop("task_args")
            return layer
        raise HarnessError(f"preset 'paper' knows tasks {', '.join(sum(PAPER_PROTOCOLS, ()))}, not {task_name!r}")
    raise HarnessError(f"unknown preset {name!r} (presets: {', '.join(PRESETS)})")


def _paper_items(task_name: str) -> int:
    """How many test items the paper evaluates on ``task_name``: the task says (``paper_items``)."""
    from harness.registry import tasks

    return tasks.get(task_name).paper_items


def paper_judge_flags(task_name: str) -> str | None:
    """The command-line flags that set the paper's judge for ``task_name``; None for a task the
    ``paper`` preset does not know."""
    try:
        layer = preset_layer("paper", task_name, "text")
    except HarnessError:
        return None
    return " ".join([f"--judge {layer['judge']}", *(f"--judge-arg {key}={value}" for key, value in layer.get("judge_args", {}).items())])


def listing() -> list[tuple[str, str, str, str]]:
    """What ``harness list presets`` shows: (preset, the tasks it is for, what it is, the options it
    sets with nested keys dotted), a row per protocol; an option one task alone sets names it."""
    rows = [("offline", "every text task", DESCRIPTIONS["offline"], _settings(dotted(OFFLINE)))]
    for tasks in PAPER_PROTOCOLS:
        layers = {name: dotted(preset_layer("paper", name, "text")) for name in tasks}
        common = {k: v for k, v in layers[tasks[0]].items() if all(layer.get(k, object()) == v for layer in layers.values())}
        own = [_settings({k: v for k, v in layer.items() if k not in common}, f" ({name})") for name, layer in layers.items()]
        rows.append(("paper", ", ".join(tasks), DESCRIPTIONS["paper"], "  ".join(filter(None, [_settings(common), *own]))))
    return rows


def _settings(options: dict, suffix: str = "") -> str:
    return "  ".join(f"{key}={value}{suffix}" for key, value in options.items())

