"""The revision loop on the tiny model (transformers engine) and against a local OpenAI-compatible
server (openai engine); determinism under a seed; kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli
from openai_server import FakeOpenAIServer

from harness.engine import SamplingParams, build_engine, cut_at_stop
from harness.models import model_ref
from harness.stages.generate import Candidate, OneModelAtATime, generate_revisions, prompt_hash
from harness.store import RunStore, read_jsonl
from harness.task import build_task

ARTICLES = [
    {"id": f"a{i}", "article": text, "reference": "ref"}
    for i, text in enumerate([
        "The council said the new bridge will open next year after a delay caused by flooding.",
        "Police are appealing for witnesses after a car crashed into a shop on the high street.",
        "The club confirmed the striker has signed a new three-year contract.",
        "Scientists have found that the river is cleaner than at any time in fifty years.",
        "The town will hold its first food festival in the park this summer.",
    ])
]  # fmt: skip


def _loop(store_dir, engine, candidates, params, revisions=2, chunk_size=2):
    store = RunStore.open(store_dir, {"t": 1}, seed=0)
    task = build_task("xsum")
    rows = generate_revisions(store, task, engine, lambda c: engine, {"engine": "test"}, ARTICLES, candidates, revisions, params, chunk_size)
    return rows, engine.prompt_formatter(task)


def test_generation_goes_model_by_model_with_one_loaded_at_a_time(tiny, tmp_path):
    """Methods trained in full have a model each: their engines are built one after the other,
    each once, the one before closed first, whatever order the methods were named in."""
    import shutil

    other = str(shutil.copytree(tiny, tmp_path / "full"))  # another model: a method trained in full
    events = []

    def build(path):
        engine = build_engine("transformers", {"model": path, "batch_size": 3})
        close = engine.close
        engine.close = lambda: (events.append(("close", path)), close())
        events.append(("open", path))
        return engine

    cands = [Candidate("lora-a", model_ref(tiny), None), Candidate("full", model_ref(other), None), Candidate("lora-b", model_ref(tiny), None)]
    engine_for = OneModelAtATime(build)
    store = RunStore.open(tmp_path / "run", {"t": 1}, seed=0)
    rows = generate_revisions(store, build_task("xsum"), build_engine("transformers", {"model": tiny}), engine_for, {"engine": "test"}, ARTICLES, cands, 2, SamplingParams(max_new_tokens=4), 2)
    engine_for.close()
    assert events == [("open", tiny), ("close", tiny), ("open", other), ("close", other)]
    assert sorted((r["method"], r["revision"]) for r in rows) == sorted((c.method, k) for c in cands for k in range(3) for _ in ARTICLES)


@pytest.fixture(scope="module")
def adapters(tiny, tmp_path_factory):
    """Two LoRA adapters with random weights (peft's default starts B at zero: they would change
    nothing), the second on more layers than the first (per-method lora_target_modules)."""
    from peft import LoraConfig, get_peft_model

    from harness.models import load_causal_lm

    folders = []
    for i, targets in enumerate([["q_proj", "v_proj"], "all-linear"]):
        torch.manual_seed(i)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
        folder = tmp_path_factory.mktemp("adapter") / f"a{i}"
        get_peft_model(load_causal_lm(tiny), lora).save_pretrained(folder)
        folders.append(str(folder))
    return folders


def test_a_merged_adapter_generates_the_unmerged_texts_and_the_base_comes_back_as_loaded(tiny, adapters):
    from harness.models import load_causal_lm

    prompts = [a["article"] for a in ARTICLES[:3]]
    order = [adapters[0], adapters[1], None, adapters[0], None]  # switching both ways, the base in between
    texts = {}
    for merge in (True, False):  # float32 on a GPU too: in bf16 the merged weights round, and greedy texts may part
        engine = build_engine("transformers", {"model": tiny, "merge_adapters": merge, "dtype": "float32"})
        texts[merge] = [[g.text for g in engine.generate(prompts, SamplingParams(max_new_tokens=12), adapter=a)] for a in order]
        if merge:  # the base model's own modules, no adapter layer left, every weight as loaded, bit for bit
            loaded, now = load_causal_lm(tiny).state_dict(), engine._model.state_dict()
            assert now.keys() == loaded.keys() and all(torch.equal(now[k].cpu(), loaded[k]) for k in loaded)
    assert texts[True] == texts[False]
    assert len({tuple(t) for t in texts[True][:3]}) == 3  # the adapters change what is generated: the comparison means something


def test_a_compiled_decoding_step_serves_every_adapter_without_compiling_again(tiny, adapters):
    """With the static cache transformers compiles the decoding step (on a GPU; here asked to on
    the CPU, with a backend that counts the graphs it is handed). Merged adapters leave the base
    model's modules in place, so switching methods compiles nothing: peft's layers, left in,
    recompiled the step for every adapter, and torch stops compiling after eight."""
    from transformers import CompileConfig

    graphs = []

    def counting(graph, example_inputs, **options):
        graphs.append(graph)
        return graph.forward  # runs the captured graph as it is: the texts show it read the weights of the moment

    config = CompileConfig(backend=counting)
    config._compile_all_devices = True  # transformers' switch to compile on a CPU
    prompts = [a["article"] for a in ARTICLES[:3]]
    order = [None, adapters[0], adapters[1], None, adapters[0]]
    compiled = build_engine("transformers", {"model": tiny, "cache": "static", "dtype": "float32"})  # float32 on a GPU too, so the texts compare
    compiled._load().generation_config.compile_config = config
    torch._dynamo.reset()
    try:
        texts = [[g.text for g in compiled.generate(prompts, SamplingParams(max_new_tokens=12), adapter=a)] for a in order]
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    eager = build_engine("transformers", {"model": tiny, "dtype": "float32"})
    assert texts == [[g.text for g in eager.generate(prompts, SamplingParams(max_new_tokens=12), adapter=a)] for a in order]


def test_a_merged_adapter_decodes_with_the_base_models_operations(tiny, adapters):
    """On a GPU a decoding step waits on its kernel launches: peft's unmerged LoRA nearly doubles
    them (every linear layer adds its adapter's), merging brings them back to the base model's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    def per_step(engine, adapter):
        counts = []
        for tokens in (5, 9):
            engine.generate(["The council said"], SamplingParams(max_new_tokens=tokens), adapter=adapter)  # loads and merges outside the count
            with Count() as count:
                engine.generate(["The council said"], SamplingParams(max_new_tokens=tokens), adapter=adapter)
            counts.append(count.ops)
        return (counts[1] - counts[0]) / 4

    merged, unmerged = (build_engine("transformers", {"model": tiny, "merge_adapters": m}) for m in (True, False))
    base = per_step(merged, None)
    assert per_step(merged, adapters[1]) == base and per_step(unmerged, adapters[1]) > 1.5 * base  # the adapter on every linear layer


def test_revision_loop_on_the_transformers_engine(tiny, tmp_path):
    engine = build_engine("transformers", {"model": tiny, "batch_size": 3})
    cands = [Candidate("base", model_ref(tiny), None), Candidate("other", model_ref(tiny), None)]
    rows, formatter = _loop(tmp_path / "run", engine, cands, SamplingParams(max_new_tokens=8))
    assert len(rows) == len(ARTICLES) * 2 * 3
    keys = {(r["example_id"], r["method"], r["revision"]) for r in rows}
    assert len(keys) == len(rows)
    by_key = {(r["example_id"], r["method"], r["revision"]): r for r in rows}
    for ex in ARTICLES:
        assert by_key[(ex["id"], "base", 0)]["prompt_hash"] == prompt_hash(formatter.prompt(ex))
        for rev in (1, 2):  # revision k has revision k-1 in context
            previous = by_key[(ex["id"], "base", rev - 1)]["text"]
            assert by_key[(ex["id"], "base", rev)]["prompt_hash"] == prompt_hash(formatter.revision_prompt(ex, previous))
    row = rows[0]
    assert row["sampling"]["max_new_tokens"] == 8 and row["completion_tokens"] <= 8 and row["prompt_tokens"] > 20
    # a rerun of a finished generation does nothing
    before = (tmp_path / "run" / "generations.jsonl").read_text()
    again, _ = _loop(tmp_path / "run", engine, cands, SamplingParams(max_new_tokens=8))
    assert (tmp_path / "run" / "generations.jsonl").read_text() == before and again == rows


def test_sampling_is_deterministic_under_a_seed_and_batching(tiny, tmp_path):
    cands = [Candidate("base", model_ref(tiny), None)]
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=3)
    a, _ = _loop(tmp_path / "a", build_engine("transformers", {"model": tiny, "batch_size": 2}), cands, params, revisions=1)
    b, _ = _loop(tmp_path / "b", build_engine("transformers", {"model": tiny, "batch_size": 2}), cands, params, revisions=1)
    assert [r["text"] for r in a] == [r["text"] for r in b]
    c, _ = _loop(tmp_path / "c", build_engine("transformers", {"model": tiny, "batch_size": 2}), cands,
                 SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=4), revisions=1)  # fmt: skip
    assert [r["text"] for r in a] != [r["text"] for r in c]


def test_the_sampler_draws_from_the_nucleus_at_its_probabilities():
    """Inverse-transform sampling gives each token its tempered, nucleus-renormalised
    probability: 40,000 rows (a seed each, one step) against the exact law by a chi-square test.
    The seeds are fixed, so the test cannot flake; a sampler that ignored the temperature, kept
    the nucleus' mass unnormalised or picked the token before (or after) its interval fails it."""
    from scipy.stats import chisquare

    from harness.engines.transformers_engine import SeededRowSampler

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")])  # the last token is impossible
    for temperature, top_p in [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8)]:
        exact = torch.softmax(logits / temperature, dim=0).double()
        nucleus = exact.cumsum(0) - exact <= top_p  # the top tokens up to mass top_p
        exact = torch.where(nucleus, exact, 0.0) / exact[nucleus].sum()
        sampler = SeededRowSampler(list(range(40_000)), temperature, top_p, 1, "cpu")
        out = sampler(None, logits.expand(40_000, -1).clone())  # [B, V]: 0 at each row's pick, -inf elsewhere
        assert (out == 0).sum(dim=1).eq(1).all()
        counts = torch.bincount(out.argmax(dim=1), minlength=len(logits)).double()
        assert counts[exact == 0].sum() == 0  # nothing outside the nucleus, never the impossible token
        kept = exact > 0
        assert chisquare(counts[kept].numpy(), (exact[kept] * 40_000).numpy()).pvalue > 1e-3, (temperature, top_p, counts)


def test_a_rows_draws_depend_on_its_seed_and_step_not_on_its_batch():
    """A row's token at each step is the same sampled alone or among other rows, in any order:
    its draw comes from its own seed and the step. Each step is a fixed set of batched
    operations, whatever the rows (on a GPU each operation is a kernel launch the step waits on)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from harness.engines.transformers_engine import SeededRowSampler

    torch.manual_seed(0)
    scores = torch.randn(6, 4, 50)  # [steps, rows, V]: the model's scores for four rows at six steps
    seeds = [11, 12, 13, 14]

    def picks(rows: list[int]) -> torch.Tensor:
        sampler = SeededRowSampler([seeds[r] for r in rows], 0.9, 0.9, len(scores), "cpu")
        return torch.stack([sampler(None, step[rows]).argmax(dim=1) for step in scores])  # [steps, len(rows)]

    together = picks([0, 1, 2, 3])
    assert torch.equal(picks([3, 1]), together[:, [3, 1]])
    assert all(torch.equal(picks([r]), together[:, [r]]) for r in range(4))
    assert len(set(together.flatten().tolist())) > 4  # the rows draw different tokens: seeds are not shared
    again = SeededRowSampler([seeds[0]], 0.9, 0.9, len(scores), "cpu")
    assert len({again(None, scores[0, :1]).argmax().item() for _ in scores}) > 1  # the same scores at every step: a new draw each step

    class Operations(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Operations.count += 1
            return func(*args, **(kwargs or {}))

    def operations(rows: int) -> int:
        sampler = SeededRowSampler(list(range(rows)), 0.9, 0.9, 1, "cpu")
        logits = torch.randn(rows, 50)
        Operations.count = 0
        with Operations():
            sampler(None, logits)
        return Operations.count

    assert operations(2) == operations(64)


def test_sampled_completions_are_keyed_by_the_sampler_and_greedy_ones_are_not():
    """A sampled text depends on how its tokens were drawn, so a sampled run's key holds the
    engine's sampler (another one, or an engine without, regenerates); a greedy text does not, so
    a greedy run's key stays what it was."""
    from harness.config import stable_hash

    engine = build_engine("transformers", {})
    greedy, sampled = SamplingParams(max_new_tokens=8), SamplingParams(temperature=0.7, max_new_tokens=8)
    assert engine.describe_config(greedy) == engine.describe_config()
    assert engine.describe_config(sampled) == {**engine.describe_config(), "sampler": engine.sampler}
    assert "sampler" not in build_engine("openai", {"model": "m"}).describe_config(sampled)  # a server draws its own tokens
    assert stable_hash(engine.describe_config(sampled)) != stable_hash(engine.describe_config(greedy))


def test_revision_loop_against_an_openai_compatible_server(tmp_path):
    answer = lambda prompt: f"Summary {len(prompt)}."  # noqa: E731
    with FakeOpenAIServer(answer, models={"served"}, chat_template=True) as server:
        engine = build_engine("openai", {"model": "served", "base_url": server.base_url, "concurrency": 4})  # api: auto
        rows, formatter = _loop(tmp_path / "run", engine, [Candidate("m", model_ref("served"), None)], SamplingParams(max_new_tokens=20))
        assert server.served == len(ARTICLES) * 3
    by_key = {(r["example_id"], r["revision"]): r for r in rows}
    for ex in ARTICLES:
        first = formatter.prompt(ex)
        assert by_key[(ex["id"], 0)]["text"] == f"Summary {len(first)}."
        second = formatter.revision_prompt(ex, by_key[(ex["id"], 0)]["text"])
        assert f"EXAMPLE SUMMARY: Summary {len(first)}.\nTL;DR:" in second
        assert second in server.prompts and by_key[(ex["id"], 1)]["text"] == f"Summary {len(second)}."
    assert rows[0]["prompt_tokens"] > 0 and rows[0]["completion_tokens"] == 2


def test_the_openai_engine_sends_completion_prompts_as_they_are_and_chat_prompts_as_chat(tmp_path):
    with FakeOpenAIServer(lambda seen: "An answer.", models={"base"}, chat_template=True) as server:
        engine = build_engine("openai", {"model": "base", "base_url": server.base_url})
        engine.generate(["ARTICLE: text\nTL;DR:"], SamplingParams(max_new_tokens=5))
        engine.generate(["How do I sort a list?"], SamplingParams(max_new_tokens=5), chat=True)
        assert server.prompts[0] == "ARTICLE: text\nTL;DR:"  # no chat template, no system prompt around a completion-style prompt
        assert server.prompts[1].startswith("<|im_start|>system") and "How do I sort a list?" in server.prompts[1]
        assert "prompt" in server.bodies[0] and "messages" in server.bodies[1]


def test_the_openai_engine_builds_the_local_engines_prompts_with_the_run_models_tokenizer(tiny, tmp_path):
    """A served adapter is asked what it is asked in-process: the source cut to as many of the run's
    model's tokens, not words (prompt_tokenizer=none, for a served model the run does not have,
    cuts words); a chat task's user turn goes to the chat API bare, for the server to put in the
    model's chat template, and to the completions API in that template, put there by the harness."""
    from harness.engine import build_engine_for

    task = build_task("xsum", {"max_source_tokens": 8})
    long_words = {"id": "z", "article": "Zookeepers counted seventeen hippopotamuses wallowing beside Kilimanjaro yesterday morning, officials said."}
    local = build_engine("transformers", {"model": tiny}).prompt_formatter(task)
    served = build_engine_for("openai", {"model": "base"}, tiny).prompt_formatter(task)
    by_words = build_engine_for("openai", {"model": "base", "prompt_tokenizer": "none"}, tiny).prompt_formatter(task)
    assert [served.prompt(ex) for ex in [*ARTICLES, long_words]] == [local.prompt(ex) for ex in [*ARTICLES, long_words]]
    assert by_words.prompt(long_words) != local.prompt(long_words)  # eight words hold more of the article than eight tokens
    assert build_engine("openai", {"model": "base"}).tokenizer() is None  # outside a run: words

    from transformers import AutoTokenizer

    chat_model = tmp_path / "chat"  # the tiny model's tokenizer with a chat template
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
    tokenizer.save_pretrained(chat_model)
    ex = ARTICLES[0]
    chat_api = build_engine_for("openai", {"model": "base"}, str(chat_model)).prompt_formatter(task, "chat")
    completions_api = build_engine_for("openai", {"model": "base", "api": "completions"}, str(chat_model)).prompt_formatter(task, "chat")
    assert chat_api.prompt(ex) == local.prompt(ex)  # the bare user turn: the server templates it
    assert completions_api.prompt(ex) == f"<|user|>{local.prompt(ex)}<|assistant|>"


def test_a_server_reads_a_prompts_bos_once_whether_the_harness_templated_it_or_not(tiny_bos, tmp_path):
    """vLLM and llama.cpp's server put the BOS of the model's tokenizer (Llama's, here) before a
    completions prompt's text. A raw prompt goes as it is, so the served model reads what the
    trainer scored; a chat prompt the harness put in a template that writes its own BOS (Llama 3's)
    goes without it, which the server then adds: one BOS, not two."""
    from transformers import AutoTokenizer

    from harness.engine import build_engine_for

    chat_model = tmp_path / "chat"
    tokenizer = AutoTokenizer.from_pretrained(tiny_bos)
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
    tokenizer.save_pretrained(chat_model)
    task, params = build_task("xsum"), SamplingParams(max_new_tokens=4)
    with FakeOpenAIServer(lambda prompt: "Fine.", models={"base"}) as server:
        engine = build_engine_for("openai", {"model": "base", "base_url": server.base_url, "api": "completions"}, str(chat_model))
        raw, chat = engine.prompt_formatter(task).prompt(ARTICLES[0]), engine.prompt_formatter(task, "chat").prompt(ARTICLES[0])
        assert chat.startswith("<s><|user|>") and not raw.startswith("<s>")
        engine.generate([raw], params)
        engine.generate([chat], params, chat=True)
    assert [b["prompt"] for b in server.bodies] == [raw, chat.removeprefix("<s>")]


def test_adapters_served_behind_an_openai_compatible_server_generate_the_transformers_engines_texts(tiny, tmp_path):
    """The scale-out path: methods trained here, their adapters served beside the base model under
    names (as ``vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER`` serves them; here a
    real model behind the test server), and ``--engine openai`` pointed at them with each adapter's
    served name. Every method's revisions are the transformers engine's: the same prompts (the
    source cut to the run's model's tokens) and the same greedy texts; each method's requests name
    its own adapter."""
    from openai_server import ServedAdapters
    from tiny import xsum_files

    test, pairs = xsum_files(tmp_path / "data")
    run = tmp_path / "run"
    common = ["--task", "xsum", "--method", "srpo,dpo", "--model", tiny, "--task-arg", f"data_files.test={test}",
              "--task-arg", f"data_files.preference={pairs}", "--task-arg", "max_source_tokens=6", "--train-arg", "lr=0.05",
              "--train-arg", "batch_size=2", "--limit", "4", "--revisions", "1", "--max-new-tokens", "8", "--output-dir", str(run)]  # fmt: skip
    for stage in ("train", "generate"):  # the transformers engine, in-process
        done = run_cli(stage, *common)
        assert done.returncode == 0, done.stderr[-3000:]
    rows = lambda: {(r["example_id"], r["method"], r["revision"]): r for r in read_jsonl(run / "generations.jsonl")}  # noqa: E731
    local = rows()
    adapters = {m: str(run / "train" / m / "adapter") for m in ("srpo", "dpo")}
    backend = ServedAdapters(tiny, "base", adapters)
    with FakeOpenAIServer(lambda seen: "", models=backend.models, backend=backend) as server:
        names = [arg for m, path in adapters.items() for arg in ("--engine-arg", f"adapter_models.{path}={m}")]
        served_run = run_cli("generate", *common, "--engine", "openai", "--engine-arg", f"base_url={server.base_url}", "--engine-arg", "model=base", *names)
        assert served_run.returncode == 0, served_run.stderr[-3000:]
        asked = {b["model"] for b in server.bodies}
    served = rows()
    assert served.keys() == local.keys() and len(served) == 4 * 2 * 2
    assert {k: (r["prompt_hash"], r["text"]) for k, r in served.items()} == {k: (r["prompt_hash"], r["text"]) for k, r in local.items()}
    assert {r["engine"]["engine"] for r in served.values()} == {"openai"}  # generated anew, not the local rows reused
    assert asked == {"srpo", "dpo"}
    assert len({r["text"] for k, r in local.items() if k[1] == "srpo"} ^ {r["text"] for k, r in local.items() if k[1] == "dpo"}) > 0  # the adapters differ: a swapped name would show


def test_the_openai_engine_checks_served_names_before_generating(tmp_path):
    from harness.config import parse_assignments
    from harness.engine import build_engine_for
    from harness.errors import HarnessError

    options = parse_assignments(["model=base", "adapter_models.runs/x.y/train/srpo/adapter=srpo-lora"], "--engine-arg")
    assert options == {"model": "base", "adapter_models": {"runs/x.y/train/srpo/adapter": "srpo-lora"}}  # the path stays whole
    with FakeOpenAIServer(lambda seen: "An answer.", models={"base"}, unknown_model="first") as server:  # as llama-cpp-python's server: no 404
        engine = build_engine_for("openai", {**options, "base_url": server.base_url}, "/home/me/.cache/harness/models/local-copy")
        assert engine.model == "base"  # the served name the user gave, not the run's local path
        with pytest.raises(HarnessError, match="does not list the model 'srpo-lora' \\(it lists: base\\)"):
            engine.generate(["p"], SamplingParams(), adapter="runs/x.y/train/srpo/adapter")
        with pytest.raises(HarnessError, match="no served name for the adapter 'runs/dpo/adapter'"):
            engine.generate(["p"], SamplingParams(), adapter="runs/dpo/adapter")
        full = build_engine_for("openai", {**options, "base_url": server.base_url}, "runs/x.y/train/dpo/model", trained=True)
        with pytest.raises(HarnessError, match="no served name for the model trained in full 'runs/x.y/train/dpo/model'"):
            full.generate(["p"], SamplingParams())  # a method trained in full is not the base: its text must not be the base's
        assert server.served == 0  # nothing was generated under a name the server does not serve
        assert engine.generate(["p"], SamplingParams())[0].text == "An answer."
    with FakeOpenAIServer(lambda seen: "An answer.", models={"base", "dpo-full"}) as server:
        mapped = {**options, "base_url": server.base_url, "adapter_models": {"runs/x.y/train/dpo/model": "dpo-full"}}
        build_engine_for("openai", mapped, "runs/x.y/train/dpo/model", trained=True).generate(["p"], SamplingParams())
        assert [b["model"] for b in server.bodies] == ["dpo-full"]
        long = FakeOpenAIServer(lambda seen: "one two three four five six", models={"base"})
    with long as server:
        engine = build_engine("openai", {"model": "base", "base_url": server.base_url})
        out = engine.generate(["p"], SamplingParams(max_new_tokens=3))[0]
        assert (out.text, out.finish_reason, out.completion_tokens) == ("one two three", "length", 3)


def test_openai_engine_needs_a_key_for_the_real_api(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    engine = build_engine("openai", {"model": "gpt-4o-mini"})
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="set the environment variable OPENAI_API_KEY"):
        engine.generate(["hi"], SamplingParams())


def test_stop_strings_ignore_leading_whitespace():
    assert cut_at_stop("\n A summary.\nBelow is", ("\n",)) == ("A summary.", True)
    assert cut_at_stop("no stop here", ("\n",)) == ("no stop here", False)


OPENING_NEWLINE = {"p0": "\nThe bridge opens next year.\nARTICLE: more", "p1": "The striker signs.\nARTICLE: more", "p2": "\n"}


def test_a_completion_a_server_ends_at_its_opening_newline_is_asked_again_and_cut_here():
    """Servers match stop strings from a completion's first character (llama.cpp's returned ""
    for SmolLM2 opening on a newline), where the local engines skip leading whitespace: the
    openai engine asks such a prompt again without stop strings and cuts it here, so every engine
    gives it the same text. The others are asked once; an empty answer stays empty."""
    stop = ("\n",)
    with FakeOpenAIServer(lambda seen: OPENING_NEWLINE[seen], models={"m"}) as server:
        out = build_engine("openai", {"model": "m", "base_url": server.base_url}).generate(list(OPENING_NEWLINE), SamplingParams(max_new_tokens=20), stop=stop)
    assert [g.text for g in out] == [cut_at_stop(a, stop)[0] for a in OPENING_NEWLINE.values()] == ["The bridge opens next year.", "The striker signs.", ""]
    assert [g.finish_reason for g in out] == ["stop", "stop", "stop"]
    asked = sorted((b["prompt"], str(b["stop"])) for b in server.bodies)
    assert asked == [("p0", "None"), ("p0", "['\\n']"), ("p1", "['\\n']"), ("p2", "None"), ("p2", "['\\n']")]


def test_the_vllm_engine_asks_a_completion_ended_at_its_opening_newline_again(monkeypatch):
    """The same rule on vLLM's offline engine, through a stand-in for the vLLM calls it makes
    (vLLM cannot be installed here), which matches stop strings as vLLM does: from the first
    character, the stop string left out, finish_reason "stop"; the token count is the words'.
    Prompts arrive as token ids, tokenized as the trainer and the transformers engine tokenize
    them: a raw prompt after the one BOS its tokenizer (Llama's, here) puts before a text, a
    chat-templated one as its template wrote it, with no second BOS."""
    import types

    from openai_server import cut_at_stop_strings

    from harness.errors import HarnessError

    BOS = 1

    def tokenizer(text, add_special_tokens=True):  # character ids, and a BOS first as Llama's tokenizer puts one
        return {"input_ids": [BOS] * add_special_tokens + [ord(c) for c in text]}

    class LLM:
        def __init__(self):
            self.asked: list[tuple[str, tuple]] = []

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, sampling, lora_request=None, use_tqdm=True):
            texts = ["".join(map(chr, p["prompt_token_ids"])).replace(chr(BOS), "<s>") for p in prompts]
            self.asked += [(t, tuple(s.stop or ())) for t, s in zip(texts, sampling)]
            outs = []
            for p, s in zip(texts, sampling):
                text = cut_at_stop_strings(OPENING_NEWLINE[p.removeprefix("<s>")], s.stop)
                done = types.SimpleNamespace(text=text, token_ids=text.split(), finish_reason="stop")
                outs.append(types.SimpleNamespace(prompt_token_ids=[0], outputs=[done]))
            return outs

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", types.SimpleNamespace(LoRARequest=None))
    engine = build_engine("vllm", {"model": "m"})
    engine._llm = llm = LLM()
    out = engine.generate(list(OPENING_NEWLINE), SamplingParams(max_new_tokens=20), stop=("\n",))
    assert [g.text for g in out] == ["The bridge opens next year.", "The striker signs.", ""]
    assert sorted(llm.asked) == [("<s>p0", ()), ("<s>p0", ("\n",)), ("<s>p1", ("\n",)), ("<s>p2", ()), ("<s>p2", ("\n",))]
    llm.asked.clear()
    engine.generate(["p1"], SamplingParams(max_new_tokens=20), stop=("\n",), chat=True)  # a chat task's prompt, in its template already
    assert llm.asked == [("p1", ("\n",))]
    llm.asked.clear()
    short = build_engine("vllm", {"model": "m", "max_model_len": 23})  # vLLM refuses a longer prompt, and cuts a completion short at it
    short._llm = llm
    with pytest.raises(HarnessError, match=r"^1 of 2 prompts \(the longest 3 tokens\) and --max-new-tokens 21 run past --engine-arg max_model_len=23: raise it"):
        short.generate(["p0", "p"], SamplingParams(max_new_tokens=21), stop=("\n",))
    assert llm.asked == []


def test_the_transformers_engine_generates_from_the_prompt_tokens_the_trainer_scored(tiny_bos, monkeypatch):
    """A raw prompt reaches the model after the BOS its tokenizer (Llama's, here) puts before a
    text, the tokens the trainer scored (and vLLM and llama.cpp's server read); a prompt already in
    a chat template, which writes its own, gets no second one."""
    from harness.policies.lm import PairEncoder

    engine = build_engine("transformers", {"model": tiny_bos})
    formatter = engine.prompt_formatter(build_task("xsum"))
    rows = [{**a, "chosen": "Yes.", "rejected": "No."} for a in ARTICLES[:3]]
    trained = [pair.sequence("chosen")[0][0] for pair in PairEncoder(formatter, ("chosen",)).encode(rows)]
    tokenizer = engine.tokenizer()
    seen, pad = [], tokenizer.pad
    monkeypatch.setattr(tokenizer, "pad", lambda batch, **kw: (seen.extend(batch["input_ids"]), pad(batch, **kw))[1])
    engine.generate([formatter.prompt(r) for r in rows], SamplingParams(max_new_tokens=2))
    assert sorted(seen) == sorted(trained) and all(t[0] == tokenizer.bos_token_id for t in trained)
    seen.clear()
    engine.generate(["<s>User: summarise this.\nAssistant:"], SamplingParams(max_new_tokens=2), chat=True)
    assert seen[0][0] == tokenizer.bos_token_id and seen[0].count(tokenizer.bos_token_id) == 1


def _cmd(tiny, pairs, out):
    return ["--task", "xsum", "--method", "dpo", "--model", tiny, "--task-arg", f"data_files.preference={pairs}",
            "--train-arg", "batch_size=2", "--limit", "40", "--revisions", "2", "--temperature", "1.0",
            "--max-new-tokens", "24", "--engine-arg", "batch_size=2", "--output-dir", str(out)]  # fmt: skip


def test_a_revision_that_repeats_its_input_is_reused_by_the_next_run(tmp_path):
    """A model that returns the text it was asked to revise (a revision's fixed point, common
    with small models) makes revisions 1 and 2 of an example read the same prompt; each row's
    key still names its revision (and so its seed), so a rerun generates nothing."""
    repeat = lambda prompt: "Summary." if "EXAMPLE SUMMARY" not in prompt else prompt.split("EXAMPLE SUMMARY: ")[1].split("\n")[0]  # noqa: E731
    with FakeOpenAIServer(repeat, models={"served"}, chat_template=True) as server:
        engine = build_engine("openai", {"model": "served", "base_url": server.base_url})
        cands, params = [Candidate("m", model_ref("served"), None)], SamplingParams(max_new_tokens=20)
        first, _ = _loop(tmp_path / "run", engine, cands, params)
        assert {r["text"] for r in first} == {"Summary."} and server.served == len(ARTICLES) * 3
        again, _ = _loop(tmp_path / "run", engine, cands, params)
        assert server.served == len(ARTICLES) * 3  # nothing asked again
    assert again == first and not (tmp_path / "run" / "generations.stale.jsonl").exists()


def test_killed_generation_resumes_without_duplicates_and_with_the_same_texts(tiny, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": e["id"], "article": e["article"], "chosen": "Good.", "rejected": "Bad."}) + "\n" for e in ARTICLES))
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for out in (killed, whole):
        assert run_cli("train", *_cmd(tiny, pairs, out)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "generate", *_cmd(tiny, pairs, killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = killed / "generations.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and (not path.exists() or path.read_text().count("\n") < 20):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(read_jsonl(path))
    assert 0 < partial < 40 * 3, "generation was not interrupted midway"
    assert run_cli("generate", *_cmd(tiny, pairs, killed)).returncode == 0
    assert run_cli("generate", *_cmd(tiny, pairs, whole)).returncode == 0
    resumed, full = read_jsonl(path), read_jsonl(whole / "generations.jsonl")
    keys = [(r["example_id"], r["method"], r["revision"]) for r in resumed]
    assert len(keys) == len(set(keys)) == 40 * 3
    text = lambda rows: {(r["example_id"], r["revision"]): r["text"] for r in rows}  # noqa: E731
    assert text(resumed) == text(full)


def test_the_stop_check_decodes_only_rows_a_stop_string_could_have_ended(tiny, monkeypatch):
    import torch

    from harness.engines.transformers_engine import _StopAfterText
    from harness.models import load_tokenizer

    tokenizer = load_tokenizer(tiny)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = ids("ARTICLE: x TL;DR:")
    rows = [prompt + ids("\n The bridge opens.\n"), prompt + ids("\n The bridge opens. Then"), prompt + ids("\n\n\n The bridge")]
    width = max(map(len, rows))
    batch = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    decoded = []
    original = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda x, **kw: (decoded.append(len(x)), original(x, **kw))[1])
    check = _StopAfterText(tokenizer, ("\n",), width - max(len(r) - len(prompt) for r in rows), "cpu")
    assert check(batch, None).tolist() == [True, False, False]  # a newline after text stops; a leading one does not
    assert len(decoded) == 1  # only the row whose newest token holds a newline was decoded


def test_rows_whose_inputs_changed_move_aside_and_others_stay(tiny, tmp_path):
    engine = build_engine("transformers", {"model": tiny, "batch_size": 5})
    cands = [Candidate("base", model_ref(tiny), None)]
    store = RunStore.open(tmp_path / "run", {"t": 1}, seed=0)
    task = build_task("xsum")
    run = lambda examples, params: generate_revisions(store, task, engine, lambda c: engine, {"engine": "test"}, examples, cands, 1, params)  # noqa: E731
    first = run(ARTICLES, SamplingParams(max_new_tokens=4))
    run(ARTICLES[:2], SamplingParams(max_new_tokens=6))  # new sampling for two examples: their rows are redone
    main = read_jsonl(tmp_path / "run" / "generations.jsonl")
    stale = read_jsonl(tmp_path / "run" / "generations.stale.jsonl")
    assert sorted(r["key"] for r in stale) == sorted(r["key"] for r in first if r["example_id"] in ("a0", "a1"))
    assert {r["example_id"] for r in main if r["sampling"]["max_new_tokens"] == 4} == {"a2", "a3", "a4"}  # the other examples' rows stay
    again = run(ARTICLES[2:], SamplingParams(max_new_tokens=4))
    assert [r["text"] for r in again] == [r["text"] for r in first if r["example_id"] in ("a2", "a3", "a4")]  # reused, not regenerated


@pytest.mark.parametrize("name", ["transformers", "openai", "vllm"])
def test_every_option_that_can_change_a_text_is_in_the_engines_identity(name):
    """The run's generations and built pairs are keyed by ``describe_config``, built from the
    engine itself: an option left at its default is in it too, so a default that changes (as
    merge_adapters' once did) cannot reuse old texts, and saying the default aloud keeps the key.
    Only options declared not to change texts (batch sizes, the device, retries) are left out, and
    changing one of those keeps the key; so does the model a local engine loads for a candidate,
    which the candidate's key holds."""
    from dataclasses import fields

    from harness import registry
    from harness.config import stable_hash

    cls = registry.engines.get(name)
    key = lambda **options: stable_hash(build_engine(name, options).describe_config())  # noqa: E731
    options = {f.name for f in fields(cls) if f.init}
    left_out = cls.not_in_generations | ({"model"} if cls.sets_model else set())
    assert options - left_out <= build_engine(name, {}).describe_config().keys()
    assert cls.not_in_generations <= options  # a misspelt name would silently leave nothing out
    changed = {"cache": "static", "merge_adapters": False, "pad_to_multiple": 8, "dtype": "float16", "model": "served-name", "base_url": "http://127.0.0.1:1/v1",
               "api": "chat", "adapter_models": {"runs/r/train/dpo/adapter": "dpo"}, "prompt_tokenizer": "none", "max_model_len": 1024, "max_lora_rank": 8, "tensor_parallel_size": 2}  # fmt: skip
    assert (options - left_out) <= changed.keys()  # an option this test does not know fails it: say here whether it changes texts
    for option in options - left_out:
        assert key(**{option: changed[option]}) != key(), option
        assert key(**{option: build_engine(name, {}).__dict__[option]}) == key(), option  # the default, said aloud
    operational = {"model": "other/model", "batch_size": 1, "max_batch_tokens": 128, "device": "cpu", "api_key_env": "OTHER_KEY", "concurrency": 2,
                   "max_retries": 0, "timeout": 5.0, "gpu_memory_utilization": 0.5}  # fmt: skip
    for option in left_out:
        assert key(**{option: operational[option]}) == key(), option


def test_the_static_cache_gives_the_dynamic_caches_texts_in_padded_shapes(tiny):
    prompts = [ex["article"][: 20 + 15 * i] for i, ex in enumerate(ARTICLES)]  # lengths differ: left padding matters
    texts, shapes = {}, []
    for cache in ("dynamic", "static"):
        engine = build_engine("transformers", {"model": tiny, "batch_size": 2, "cache": cache, "pad_to_multiple": 16})
        model = engine._load()
        model.generate = lambda original=model.generate, **kw: (shapes.append((kw["cache_implementation"] or "dynamic", kw["input_ids"].shape[1])), original(**kw))[1]
        greedy = engine.generate(prompts, SamplingParams(max_new_tokens=6))
        sampled = engine.generate(prompts, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=6, seed=5))
        texts[cache] = [g.text for g in greedy + sampled]
    assert texts["static"] == texts["dynamic"]
    static = [width for cache, width in shapes if cache == "static"]
    assert static and all(width % 16 == 0 for width in static)  # prompts padded to the multiple: compiled shapes repeat
    assert any(width % 16 for cache, width in shapes if cache == "dynamic")


def test_continuous_batching_gives_the_padded_paths_greedy_texts(tiny, adapters):
    """cache=paged hands whole prompts, unpadded, to transformers' continuous batching: its greedy
    texts, finish reasons and token counts are the padded path's, prompts of different lengths, a
    stop string (which it applies after decoding, where the padded path stops the row: either
    counts the tokens up to it) and a merged adapter included."""
    prompts = [ex["article"][: 20 + 15 * i] for i, ex in enumerate(ARTICLES)]
    params = SamplingParams(max_new_tokens=10)
    runs = {}
    for cache in ("dynamic", "paged"):
        engine = build_engine("transformers", {"model": tiny, "cache": cache, "batch_size": 2, "dtype": "float32"})
        runs[cache] = [engine.generate(prompts, params, adapter=a, stop=stop) for a in (None, adapters[1]) for stop in ((), ("e t", "o o"))]
    for dynamic, paged in zip(runs["dynamic"], runs["paged"]):
        assert paged == dynamic
    texts = [tuple(g.text for g in gens) for gens in runs["paged"]]
    assert texts[0] != texts[2] and texts[0] != texts[1]  # the adapter and the stop string change what comes out: the comparison means something
    stopped = [g for gens in runs["paged"] for g in gens if g.finish_reason == "stop"]
    assert stopped and all(g.completion_tokens < params.max_new_tokens for g in stopped)  # the tokens up to the stop, not those decoded past it nor padding


def test_continuous_batching_stops_decoding_a_row_at_its_stop_string(tiny):
    """Continuous batching ends rows at EOS alone: a row whose stream completes a stop string is
    cancelled, so the model reads no more of its tokens (its place goes to a waiting prompt), where
    decoding on to the budget would read every one of them."""
    prompts = [ex["article"][: 20 + 15 * i] for i, ex in enumerate(ARTICLES)]
    params, stops = SamplingParams(max_new_tokens=40), ("e", "h", ".")
    engine = build_engine("transformers", {"model": tiny, "cache": "paged", "batch_size": 2, "dtype": "float32"})
    engine.tokenizer()
    read = []  # tokens each forward of the model reads
    hook = engine._model.get_input_embeddings().register_forward_hook(lambda module, args, out: read.append(args[0].numel()))
    try:
        unstopped = engine.generate(prompts, params)
        everything, read[:] = sum(read), []
        stopped = engine.generate(prompts, params, stop=stops)
    finally:
        hook.remove()
    assert [g.finish_reason for g in stopped] == ["stop" if cut_at_stop(g.text, stops)[1] else "length" for g in unstopped]
    assert "stop" in {g.finish_reason for g in stopped} and "length" in {g.finish_reason for g in stopped}  # both kinds of row
    assert everything == sum(g.prompt_tokens + g.completion_tokens - 1 for g in unstopped)  # the last token is sampled, never read
    slack = 2 * len(prompts)  # a token or two in flight when the cancel lands
    assert sum(read) <= sum(g.prompt_tokens + g.completion_tokens for g in stopped) + slack < everything


@pytest.mark.parametrize("cache", ["dynamic", "paged"])
def test_a_completion_ends_at_any_end_token_the_model_lists(tiny, adapters, tmp_path, cache):
    """A model's generation config may list end tokens beside the tokenizer's EOS (Llama 3.1
    Instruct's ``<|eom_id|>``, Qwen's ``<|endoftext|>``), and vLLM and servers stop at them: the
    engine ends a row there too, keeping the text before it, counting the tokens up to it and
    saying "stop", while the rows of its batch that go on are as they were."""
    import shutil

    from harness.prompting import prompt_token_ids

    prompts = [ex["article"] for ex in ARTICLES[:3]]
    params = SamplingParams(max_new_tokens=12)
    unlisted = build_engine("transformers", {"model": tiny, "cache": cache, "dtype": "float32"})
    tokenizer = unlisted.tokenizer()
    with unlisted._use_adapter(adapters[1]):  # the tiny base repeats one token greedily; through this adapter its rows vary
        rows = unlisted._padded(prompt_token_ids(tokenizer, prompts, templated=False), params, (), [0] * len(prompts))
    end = next(t for k, t in enumerate(rows[0]) if k >= 2 and t not in rows[0][:k])  # a token row 0 first writes after some text

    listed = tmp_path / "listed"
    shutil.copytree(tiny, listed)
    config = json.loads((listed / "generation_config.json").read_text())
    (listed / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [tokenizer.eos_token_id, end]}))
    engine = build_engine("transformers", {"model": str(listed), "cache": cache, "dtype": "float32"})

    def ended(row):  # what the engine should make of an unlisted row once `end` ends completions too
        cut = next((i for i, t in enumerate(row) if t in (end, tokenizer.eos_token_id)), None)
        if cut is None:
            return tokenizer.decode(row, skip_special_tokens=True).strip(), len(row), "length"
        return tokenizer.decode(row[:cut], skip_special_tokens=True).strip(), cut + 1, "stop"

    got = [(g.text, g.completion_tokens, g.finish_reason) for g in engine.generate(prompts, params, adapter=adapters[1])]
    assert got == [ended(row) for row in rows]
    assert got[0][2] == "stop" and got[0][0]  # row 0 ended at `end`, after some text,
    assert unlisted.generate(prompts, params, adapter=adapters[1])[0].completion_tokens > got[0][1]  # where it went on unlisted


@pytest.mark.parametrize(("listed", "ends"), [(None, [0]), (0, [0]), (7, [0, 7]), ([7, 0, 5], [0, 7, 5])])
def test_the_tokenizers_eos_ends_a_completion_whatever_the_model_lists(listed, ends):
    """The trainer puts the tokenizer's EOS after every completion: generation ends there even where
    the model's generation config lists another token alone, and at each listed token once."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from harness.engines.transformers_engine import end_token_ids

    assert end_token_ids(SimpleNamespace(eos_token_id=0), GenerationConfig(eos_token_id=listed)) == ends


def test_continuous_batching_refuses_to_sample(tiny):
    """Its sampler draws from one generator for every row, so a text would depend on its batch."""
    from harness.errors import HarnessError

    engine = build_engine("transformers", {"model": tiny, "cache": "paged"})
    with pytest.raises(HarnessError, match=r"^engine option cache=paged decodes greedily only .*: use --temperature 0"):
        engine.generate(["a prompt"], SamplingParams(temperature=0.7, max_new_tokens=4))
    engine.check_sampling(SamplingParams())  # greedy is its case


def test_the_prompt_token_budget_splits_long_prompts_on_a_cpu_and_not_on_an_accelerator():
    """On a CPU, long prompts go in small batches (prefill is compute-bound; padding is work for
    nothing) of at most 32; on an accelerator, where each decoding step costs about the same
    whatever its rows, batches are as large as the prompt-token budget and the KV cache allow.
    An explicit max_batch_tokens or batch_size holds on both."""
    import torch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    prompts = [[1] * (400 + i) for i in range(32)]  # token ids; only the lengths matter here
    default = build_engine("transformers", {})
    assert [len(b) for b in default._batches(prompts, cpu, 48)] == [10, 9, 9, 4]  # 4096 tokens a batch
    assert [len(b) for b in default._batches(prompts, cuda, 48)] == [32]
    explicit = build_engine("transformers", {"max_batch_tokens": 2048})
    assert [len(b) for b in explicit._batches(prompts, cuda, 48)] == [5, 5, 4, 4, 4, 4, 4, 2]  # 5 x 409 <= 2048 < 5 x 414
    many = [[1] * 100] * 1000
    assert [len(b) for b in default._batches(many, cpu, 48)] == [32] * 31 + [8]
    assert [len(b) for b in default._batches(many, cuda, 48)] == [512, 488]  # 65,536 prompt tokens would hold 655
    assert [len(b) for b in default._batches(many, cuda, 48, cache_tokens=100 * 148)] == [100] * 10  # each row caches 100 + 48 tokens
    assert [len(b) for b in default._batches(many, cuda, 48, multiple=64, cache_tokens=100 * 176)] == [100] * 10  # the static cache's padded width
    assert [len(b) for b in build_engine("transformers", {"batch_size": 300})._batches(many, cuda, 48)] == [300, 300, 300, 100]


def test_the_kv_cache_budget_is_a_share_of_the_free_accelerator_memory_in_tokens(tiny, monkeypatch):
    """A token's KV cache as the formula counts it is what the model's cache holds (checked on a
    real forward), and an automatic batch on an accelerator holds what half the memory left free
    (the allocator's unused cache included) stores; on a CPU there is no such bound."""
    import types

    from harness.engines.transformers_engine import kv_cache_budget, kv_cache_bytes_per_token

    engine = build_engine("transformers", {"model": tiny})
    model = engine._load()
    cache = model(torch.ones(3, 7, dtype=torch.long), use_cache=True)[1]  # the output's second field, whatever this version names it
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == 3 * 7 * kv_cache_bytes_per_token(model.config, model.dtype)
    assert kv_cache_budget(model) is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10_000_000, 80_000_000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3_000_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1_000_000)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda"), config=model.config, dtype=torch.bfloat16)
    assert kv_cache_budget(on_gpu) == 6_000_000 // kv_cache_bytes_per_token(model.config, torch.bfloat16)


def test_running_out_of_accelerator_memory_while_generating_names_the_settings(tiny):
    import torch

    from harness.errors import HarnessError

    engine = build_engine("transformers", {"model": tiny, "batch_size": 2})
    model = engine._load()

    def out_of_memory(**kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    model.generate = out_of_memory
    with pytest.raises(HarnessError, match=r"^out of accelerator memory generating 2 prompts of \d+ tokens: lower --engine-arg batch_size \(now 2\) "
                                           r"or max_batch_tokens \(now auto\); completions already written are kept$"):  # fmt: skip
        engine.generate(["one prompt", "and another"], SamplingParams(max_new_tokens=4))


def test_completions_stored_before_an_engines_code_version_rose_are_generated_again(tmp_path, monkeypatch):
    """The openai engine's ``code_version`` rose when it began asking again the rows a server ended
    at an opening stop string: completions stored before it are set aside and fetched again, where
    the same version reuses them without a request."""
    from harness.engines.openai_engine import OpenAIEngine

    with FakeOpenAIServer(lambda prompt: "A summary.", models={"served"}) as server:
        engine = build_engine("openai", {"model": "served", "base_url": server.base_url})
        store = RunStore.open(tmp_path / "run", {"t": 1}, seed=0)
        cands, params = [Candidate("m", model_ref("served"), None)], SamplingParams(max_new_tokens=8)
        run = lambda: generate_revisions(store, build_task("xsum"), engine, lambda c: engine, engine.describe_config(), ARTICLES, cands, 0, params)  # noqa: E731
        first = run()
        asked = server.served
        assert asked == len(ARTICLES) and run() == first and server.served == asked  # the same version: reused
        monkeypatch.setattr(OpenAIEngine, "code_version", OpenAIEngine.code_version + 1)
        again = run()
        assert server.served == 2 * asked
    assert [r["text"] for r in again] == [r["text"] for r in first] and {r["key"] for r in again}.isdisjoint(r["key"] for r in first)
    assert sorted(r["key"] for r in read_jsonl(tmp_path / "run" / "generations.stale.jsonl")) == sorted(r["key"] for r in first)


def test_prompts_that_with_their_new_tokens_run_past_the_models_positions_are_refused(tiny):
    """GPT-2's learned positions end at 1024; past them generation indexes out of the table (on a
    GPU a device-side assert ends the process), and a rotary model writes noise: said before any
    decoding, naming what to lower."""
    from harness.errors import HarnessError

    engine = build_engine("transformers", {"model": tiny})
    prompt = "The council said the new bridge will open next year."
    length = engine.generate([prompt], SamplingParams(max_new_tokens=1))[0].prompt_tokens
    with pytest.raises(HarnessError, match=rf"^1 of 2 prompts \(the longest {length} tokens\) and --max-new-tokens {2049 - length} run past the model's 2048 positions"):
        engine.generate([prompt, "The"], SamplingParams(max_new_tokens=2049 - length))
