"""What a careless or hostile user can type, write or point the harness at: each input ends in one
plain-text message naming the problem and exit status 2, never a traceback, and writes no run folder.

The table grows with every bug found: add the input and the message it must give.
"""

import errno
import json
import os
import stat

import pytest

from harness.cli import main

BANDIT = ["run", "--task", "bandit", "--method", "dpo", "--task-arg", "steps=2", "--task-arg", "pairs=10"]
XSUM = ["run", "--task", "xsum", "--method", "srpo"]

# (name, argv with {tmp} for the test's folder, files to write first {relative path: text}, expected message)
BANDIT_SUMMARY = '{"task": "bandit", "results": [{"method": "srpo", "behavior": "uniform", "policy": [0.3, 0.3, 0.4]}], "meta": {}}'

CASES = [
    # flags
    ("seed negative", [*BANDIT, "--seed", "-1"], {}, "config option 'seed' (--seed): input should be greater than or equal to 0 (got '-1')"),
    ("seed not a number", [*BANDIT, "--seed", "abc"], {}, "option 'seed' (--seed): input should be a valid integer"),
    ("limit zero", [*XSUM, "--limit", "0"], {}, "option 'limit' (--limit): input should be greater than or equal to 1"),
    ("revisions negative", [*XSUM, "--revisions", "-1"], {}, "option 'revisions' (--revisions): input should be greater than or equal to 0"),
    ("temperature negative", [*XSUM, "--temperature", "-1"], {}, "sampling option 'temperature': input should be greater than or equal to 0"),
    ("top-p zero", [*XSUM, "--top-p", "0"], {}, "sampling option 'top_p': input should be greater than 0"),
    ("no new tokens", [*XSUM, "--max-new-tokens", "0"], {}, "sampling option 'max_new_tokens': input should be greater than or equal to 1"),
    ("unknown method", ["run", "--task", "xsum", "--method", "srp"], {}, "unknown method 'srp'; did you mean 'srpo'?"),
    ("empty method list", ["run", "--task", "xsum", "--method", ","], {}, "config option 'methods' (--method): lists no name"),
    ("method twice", ["run", "--task", "xsum", "--method", "srpo,srpo"], {}, "lists a name twice"),
    ("unknown task", ["run", "--task", "nope", "--method", "srpo"], {}, "unknown task 'nope'"),
    ("no task", ["run", "--method", "srpo"], {}, "no task given: pass --task NAME"),
    ("no method", ["run", "--task", "xsum"], {}, "no method given: pass --method NAME"),
    ("assignment without =", [*XSUM, "--task-arg", "limit"], {}, "--task-arg expects KEY=VALUE, got 'limit'"),
    ("assignment without key", [*XSUM, "--task-arg", "=3"], {}, "--task-arg expects KEY=VALUE, got '=3'"),
    ("task option of wrong type", [*XSUM, "--task-arg", "max_source_tokens=abc"], {}, "task 'xsum' option 'max_source_tokens': input should be a valid integer"),
    ("unknown task option", [*XSUM, "--task-arg", "varaint=xlsum"], {}, "task 'xsum' has no option 'varaint'; did you mean 'variant'?"),
    ("beta nan", [*XSUM, "--method-arg", "beta=nan"], {}, "method 'srpo' option 'beta': input should be a finite number"),
    ("beta infinite", [*XSUM, "--method-arg", "beta=.inf"], {}, "method 'srpo' option 'beta': input should be a finite number"),
    ("beta negative", [*XSUM, "--method-arg", "beta=-1"], {}, "method 'srpo' option 'beta': input should be greater than 0 (got -1)"),
    ("unknown method option", [*XSUM, "--method-arg", "gamma=1"], {}, "no method in this run has option 'gamma'"),
    ("misspelled method in option", [*XSUM, "--method-arg", "srop.beta=1"], {}, "unknown method 'srop'; did you mean 'srpo'?"),
    ("lr nan", [*XSUM, "--train-arg", "lr=nan"], {}, "train option 'lr': input should be a finite number"),
    ("adam beta1 of 2", [*XSUM, "--train-arg", "adam_beta1=2"], {}, "train option 'adam_beta1': input should be less than 1 (got 2)"),
    ("lora rank 0", [*XSUM, "--train-arg", "lora_r=0"], {}, "train option 'lora_r': input should be greater than or equal to 1"),
    ("weight decay negative", [*XSUM, "--train-arg", "weight_decay=-1"], {}, "train option 'weight_decay': input should be greater than or equal to 0"),
    ("lora dropout 2", [*XSUM, "--train-arg", "lora_dropout=2"], {}, "train option 'lora_dropout': input should be less than 1"),
    ("no completion tokens", [*XSUM, "--train-arg", "max_completion_tokens=0"], {}, "train option 'max_completion_tokens': input should be greater than or equal to 1"),
    ("batch not a multiple", [*XSUM, "--train-arg", "batch_size=3", "--train-arg", "micro_batch_size=2"], {}, "batch_size (3) must be a multiple of micro_batch_size (2)"),
    ("micro-batch of 0", [*XSUM, "--train-arg", "micro_batch_size=0"], {}, "train option 'micro_batch_size': input should be greater than or equal to 1 or 'auto' (got 0)"),
    ("KV-cache sharing under checkpointing", [*XSUM, "--train-arg", "gradient_checkpointing=true", "--train-arg", "prefix_sharing=cache"], {},
     "prefix_sharing 'cache' needs the KV cache, which gradient checkpointing turns off: use 'packed'"),
    ("token budget a word", [*XSUM, "--engine-arg", "max_batch_tokens=lots"], {}, "engine 'transformers' option 'max_batch_tokens': input should be a valid integer, unable to parse string as an integer or 'auto' (got 'lots')"),
    ("unknown schedule", [*XSUM, "--train-arg", "schedule=linear"], {}, "train option 'schedule': input should be 'constant' or 'cosine'"),
    ("precision per method", ["run", "--task", "xsum", "--method", "srpo,dpo", "--train-arg", "dpo.bf16=yes"], {},
     "train option 'bf16' must be the same for every training of a run (srpo: False, dpo: True)"),
    ("SFT on a task without SFT data", [*XSUM, "--sft-task", "arena-hard"], {}, "task 'arena-hard' has no sft split to run the SFT stage on (it has test)"),
    ("SFT task misspelt", [*XSUM, "--sft-task", "sharegtp"], {}, "unknown task 'sharegtp'"),
    ("per-method trainer typo", [*XSUM, "--train-arg", "srpo.lrr=1"], {}, "train (srpo) has no option 'lrr'; did you mean 'lr'?"),
    ("unknown engine", [*XSUM, "--engine", "nope"], {}, "unknown engine 'nope'"),
    ("engine dtype", [*XSUM, "--engine-arg", "dtype=foo"], {}, "engine 'transformers' option 'dtype': input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ("sampling through continuous batching", [*XSUM, "--engine-arg", "cache=paged", "--temperature", "0.7"], {},
     "engine option cache=paged decodes greedily only (continuous batching draws sampled tokens from one generator shared by every row"),
    ("source cut negative", [*XSUM, "--task-arg", "max_source_tokens=-3"], {}, "task 'xsum' option 'max_source_tokens': input should be greater than or equal to 0 (got -3)"),
    ("engine batch of 0", [*XSUM, "--engine-arg", "batch_size=0"], {}, "engine 'transformers' option 'batch_size': input should be greater than or equal to 1"),
    ("prompt tokenizer missing", [*XSUM, "--engine", "openai", "--engine-arg", "prompt_tokenizer=/nonexistent/tok"], {},
     "engine 'openai': option 'prompt_tokenizer' is 'auto', 'none' or a model: model '/nonexistent/tok' is not a model folder, a hub id"),
    ("unknown judge", [*XSUM, "--judge", "gpt5"], {}, "unknown judge 'gpt5'"),
    ("oracle judge on text", [*XSUM, "--judge", "oracle"], {}, "judge 'oracle' does not judge text; text tasks take:"),
    ("judge model empty", [*XSUM, "--judge", "openai", "--judge-arg", "model="], {}, "judge 'openai': needs the served model's name: --judge-arg model=NAME"),
    ("judge address not http", [*XSUM, "--judge", "openai", "--judge-arg", "base_url=ftp://127.0.0.1/v1"], {},
     "judge 'openai' option 'base_url': must be empty (OpenAI's API) or an http:// or https:// address such as http://127.0.0.1:8000/v1, got 'ftp://127.0.0.1/v1'"),
    ("engine address without host", [*XSUM, "--engine", "openai", "--engine-arg", "model=m", "--engine-arg", "base_url=localhost:8000/v1"], {},
     "engine 'openai' option 'base_url': must be empty (OpenAI's API) or an http:// or https:// address"),
    ("engine address with a password", [*XSUM, "--engine", "openai", "--engine-arg", "model=m", "--engine-arg", "base_url=http://me:hunter2@127.0.0.1:8000/v1"], {},
     "engine 'openai' option 'base_url': holds a password (user:password@), which the run would write into its config.json"),  # and not into the error: hunter2 is not in the message
    ("engine served model missing", [*XSUM, "--engine", "openai", "--engine-arg", "base_url=http://127.0.0.1:9/v1"], {},
     "engine 'openai' needs the served base model's name: --engine-arg model=NAME"),
    ("judge retries negative", [*XSUM, "--judge", "openai", "--judge-arg", "max_retries=-1"], {}, "judge 'openai' option 'max_retries': input should be greater than or equal to 0"),
    ("judge concurrency negative", [*XSUM, "--judge", "openai", "--judge-arg", "concurrency=-1"], {}, "judge 'openai' option 'concurrency': input should be greater than or equal to 1 or 'auto' (got -1)"),
    ("judge on the bandit", [*BANDIT, "--judge", "openai"], {}, "option 'judge' (--judge) does not apply to task 'bandit', a synthetic task"),
    ("model on the bandit", [*BANDIT, "--model", "x/y"], {}, "option 'model' (--model) does not apply to task 'bandit'"),
    ("behaviour on a text task", [*XSUM, "--behavior", "skewed"], {}, "option 'behaviors' (--behavior) does not apply to task 'xsum', a text task"),
    ("unknown behaviour", [*BANDIT, "--behavior", "nope"], {}, "unknown behaviour 'nope'"),
    ("training task options without one", [*XSUM, "--train-task-arg", "data_files.preference={tmp}/p.jsonl"], {},
     "option 'train_task_args' (--train-task-arg) sets options of --train-task, which is not given: the evaluated task's options are task_args (--task-arg)"),
    ("SFT task options without one", [*XSUM, "--sft-task-arg", "data_files.sft={tmp}/s.jsonl"], {}, "option 'sft_task_args' (--sft-task-arg) sets options of --sft-task, which is not given"),
    ("unknown preset", [*XSUM, "--preset", "papper"], {}, "unknown preset 'papper'"),
    ("paper preset on the bandit", [*BANDIT, "--preset", "paper"], {}, "preset 'paper' is for text tasks"),
    ("bootstrap level 2", [*XSUM, "--bootstrap-arg", "level=2"], {}, "bootstrap option 'level': input should be less than 1 (got 2)"),
    ("unknown interval", [*XSUM, "--bootstrap-arg", "interval=wald"], {}, "bootstrap option 'interval': input should be 'score' or 'bca' (got 'wald')"),
    ("bootstrap of 10 resamples", [*XSUM, "--bootstrap-arg", "resamples=10"], {}, "bootstrap option 'resamples': input should be greater than or equal to 100"),
    ("missing model folder", [*XSUM, "--model", "/nonexistent/model"], {}, "model '/nonexistent/model' is not a model folder, a hub id"),
    ("model not a name", [*XSUM, "--model", "foo"], {}, "model 'foo' is not a model folder, a hub id"),
    ("model an adapter", [*XSUM, "--model", "{tmp}/adapter"], {"adapter/adapter_config.json": "{}"},
     "model '{tmp}/adapter' is a PEFT adapter (adapter_config.json), not a model: pass the model it was trained on"),
    ("model folder without a config", [*XSUM, "--model", "{tmp}/m"], {"m/tokenizer.json": "{}"}, "model '{tmp}/m' cannot be loaded: "),
    ("judge model folder without a config", [*XSUM, "--judge-arg", "model={tmp}/m"], {"m/tokenizer.json": "{}"}, "judge 'local-lm': model '{tmp}/m' cannot be loaded: "),
    ("markup in an argument", [*BANDIT, "--behavior", "x[/]"], {}, "unknown behaviour 'x[/]'"),
    ("brackets in a hub id", [*XSUM, "--model", "[test]"], {}, "model '[test]' is not a model folder"),
    # config files
    ("config file missing", [*XSUM, "--config", "{tmp}/nope.yaml"], {}, "config file '{tmp}/nope.yaml' does not exist"),
    ("config not YAML", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "a: [1\n"}, "is not valid YAML/JSON"),
    ("config a list", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "- 1\n- 2\n"}, "must hold a mapping of options, not list"),
    ("config not UTF-8", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": b"task: \xff\xfe\n"}, "is not UTF-8 text"),
    ("config task a number", ["run", "--method", "srpo", "--config", "{tmp}/c.yaml"], {"c.yaml": "task: 3\n"}, "config option 'task' (--task): input should be a valid string (got 3)"),
    ("config model a number", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "model: 5\n"}, "config option 'model' (--model): input should be a valid string (got 5)"),
    ("config output dir a list", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "output_dir: [a]\n"}, "config option 'output_dir' (--output-dir): input should be a valid string"),
    ("config task args a list", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "task_args: [1]\n"}, "config option 'task_args' (--task-arg): input should be a valid dictionary"),
    ("config engine args nested", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "engine_args: {batch_size: {a: 1}}\n"}, "engine 'transformers' option 'batch_size': input should be a valid integer"),
    ("config unknown key", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "limt: 3\n"}, "config has no option 'limt'; did you mean 'limit'?"),
    ("config methods a number", ["run", "--task", "xsum", "--config", "{tmp}/c.yaml"], {"c.yaml": "methods: 5\n"}, "config option 'methods' (--method): must be a comma-separated string or a list of names"),
    ("config seed a bool", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "seed: [1]\n"}, "config option 'seed' (--seed): input should be a valid integer"),
    ("config sft a number", [*XSUM, "--config", "{tmp}/c.yaml"], {"c.yaml": "sft: 3\n"}, "config option 'sft' (--sft)"),
    # data files (harness data loads a split as a run does)
    ("data file missing", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/nope.jsonl"], {}, "data file '{tmp}/nope.jsonl' does not exist"),
    ("data file a folder", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/xsum"], {"xsum/test.jsonl": "{}"}, "data file '{tmp}/xsum' is a folder: name a .jsonl"),
    ("data file malformed", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": '{"id": 1, "article": "a", "reference": "r"}\n{"id": 2,\n'}, "{tmp}/t.jsonl, line 2: not valid JSON"),
    ("data file empty", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": ""}, "data file '{tmp}/t.jsonl' holds no rows"),
    ("data field missing", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": '{"id": 1, "article": "a"}\n'}, "{tmp}/t.jsonl, line 1: field 'reference' is missing"),
    ("data field not text", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": '{"id": 1, "article": ["a"], "reference": "r"}\n'}, "field 'article' must be text, got list"),
    ("data lone surrogate", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": '{"id": 1, "article": "a\\ud800b", "reference": "r"}\n'}, "field 'article' holds an invalid character ('\\ud800' at position 1)"),
    ("data duplicate ids", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": '{"id": 1, "article": "a", "reference": "r"}\n{"id": 1, "article": "b", "reference": "s"}\n'}, "id '1' appears twice (rows 1 and 2)"),
    ("data unknown format", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.txt"], {"t.txt": "x"}, "unknown format '.txt'"),
    ("data split the task lacks", ["data", "--task", "sharegpt"], {}, "task 'sharegpt' has no 'test' split: pass --split sft"),
    ("data unknown split", ["data", "--task", "xsum", "--task-arg", "data_files.nope={tmp}/t.jsonl"], {}, "data_files names unknown split(s) ['nope']"),
    ("data not UTF-8", ["data", "--task", "xsum", "--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": b'{"id": 1, "article": "\xff", "reference": "r"}\n'}, "line 1: invalid UTF-8 at byte"),
    # run folders read by score and leaderboard
    ("summary empty", ["score", "{tmp}/run"], {"run/summary.json": ""}, "{tmp}/run/summary.json is not valid JSON"),
    ("summary truncated", ["leaderboard", "{tmp}/run"], {"run/summary.json": '{"task": "xsum", "resu'}, "summary.json is not valid JSON"),
    ("summary not UTF-8", ["leaderboard", "{tmp}/run"], {"run/summary.json": b"\xff\xfe{}"}, "summary.json is not valid JSON"),
    ("summary a list", ["score", "{tmp}/run"], {"run/summary.json": "[]"}, "is not a summary the harness wrote (it holds a list, not an object)"),
    ("summary without meta", ["leaderboard", "{tmp}/run"], {"run/summary.json": '{"task": "xsum", "results": []}'}, "is not a summary the harness wrote (it has no meta)"),
    ("summary without results", ["score", "{tmp}/run"], {"run/summary.json": '{"task": "xsum", "meta": {}}'}, "(its results are not a list of rows)"),
    ("summary without task", ["leaderboard", "{tmp}/run"], {"run/summary.json": '{"results": [], "meta": {}}'}, "(it has no task)"),
    ("rescoring a bandit run", ["score", "{tmp}/run"], {"run/summary.json": BANDIT_SUMMARY}, "{tmp}/run is a run of the synthetic task 'bandit': its win rates are exact, with no verdicts to judge or rescore"),
    ("judging a bandit run", ["judge", "{tmp}/run", "--judge", "openai"], {"run/summary.json": BANDIT_SUMMARY}, "{tmp}/run is a run of the synthetic task 'bandit'"),
    ("a bandit run after a text run", ["leaderboard", "{tmp}/text", "{tmp}/run"], {"text/summary.json": '{"task": "xsum", "results": [], "meta": {}}', "run/summary.json": BANDIT_SUMMARY},
     "{tmp}/run is a bandit run; build its page alone (harness leaderboard {tmp}/run)"),
    ("judge options without a judge", ["judge", "{tmp}/run", "--judge-arg", "max_source_tokens=64"], {"run/summary.json": '{"task": "xsum", "results": [], "meta": {}}'},
     "with a run folder, --judge-arg needs --judge NAME"),
    ("an unknown second judge, named before the run's test file (gone) is read", ["judge", "{tmp}/run", "--judge", "nope"],
     {"run/summary.json": '{"task": "xsum", "results": [], "meta": {}}', "run/config.json": '{"task": "xsum", "methods": "srpo", "task_args": {"data_files": {"test": "gone.jsonl"}}}'},
     "unknown judge 'nope'; did you mean 'openai'?"),
    ("not a run folder", ["score", "{tmp}/nothing"], {}, "'{tmp}/nothing' is not a folder"),
    ("a run without verdicts", ["score", "{tmp}/run"], {"run/summary.json": '{"task": "xsum", "results": [], "meta": {}}'}, "holds no verdicts (judgments.jsonl)"),
    # output folders
    ("output folder under a file", [*BANDIT, "--output-dir", "{tmp}/file/run"], {"file": "x"}, "cannot write the run folder '{tmp}/file/run'"),
    ("output folder is a file", [*BANDIT, "--output-dir", "{tmp}/file"], {"file": "x"}, "output dir '{tmp}/file' exists and is not a folder"),
    ("output folder in /proc", [*BANDIT, "--output-dir", "/proc/harness-run"], {}, "cannot write the run folder '/proc/harness-run'"),
    ("output folder of someone else's files", [*BANDIT, "--output-dir", "{tmp}/mine"], {"mine/thesis.tex": "x"}, "holds files but no run (no manifest.json)"),
]


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """An input the harness wrongly accepts fails at once here instead of training a model."""

    def accepted(*args, **kwargs):
        raise AssertionError("the input was accepted and the run started")

    monkeypatch.setattr("harness.stages.train.train_all", accepted)
    monkeypatch.setattr("harness.stages.synthetic.train_tabular", accepted)


@pytest.mark.parametrize("name, argv, files, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_message(tmp_path, capsys, name, argv, files, message):
    for relative, content in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    fill = lambda text: text.replace("{tmp}", str(tmp_path))  # noqa: E731
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([fill(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fill(message) in err and "hunter2" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no half-written artifact


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_mid_run_ends_in_one_line_that_says_so(tmp_path, capsys, monkeypatch, code):
    """Disk full or over quota while a stage writes: one line naming the file and what to do, no
    traceback; the folder the run wrote so far stays."""

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "train" / "srpo" / "adapter_model.safetensors"))

    monkeypatch.setattr("harness.stages.synthetic.train_tabular", full)
    assert main([*BANDIT, "--output-dir", str(tmp_path / "run")]) == 2
    out = capsys.readouterr().err
    err = out.splitlines()[-1]  # after the progress bar
    assert "Traceback" not in out
    assert err == (f"error: {os.strerror(code)} writing {tmp_path}/run/train/srpo/adapter_model.safetensors: free some space (or pass another "
                   "--output-dir) and rerun the same command; finished work is kept")  # fmt: skip
    assert (tmp_path / "run" / "manifest.json").exists()


def test_torchs_writer_on_a_full_disk_is_taken_for_one(tmp_path, monkeypatch):
    """torch.save on a full 3 MB tmpfs raised RuntimeError("[enforce fail at inline_container.cc:672]
    . unexpected pos 576 vs 534"); with no room left it is the OSError of a full disk, otherwise
    it stays what it was."""
    import collections
    import shutil

    import torch

    from harness.training.checkpoint import save_tensors

    def failing(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", failing)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(3 << 20, 3 << 20, 4096))
    with pytest.raises(OSError) as full:
        save_tensors({}, tmp_path / "reference_logps.pt")
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(tmp_path / "reference_logps.pt")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(3 << 30, 1 << 30, 2 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_tensors({}, tmp_path / "reference_logps.pt")


def test_a_full_disk_that_a_rust_library_reports_ends_in_one_line_too(tmp_path, capsys, monkeypatch):
    """tokenizers' save_pretrained on a full disk raised `Exception: No space left on device (os
    error 28)` (seen on a 3 MB tmpfs): no OSError, but the same line."""
    from tokenizers import Tokenizer, models

    def missing_folder(*args, **kwargs):  # the same kind of exception, of another error: no full disk, not ours to explain
        Tokenizer(models.BPE()).save(str(tmp_path / "no-such-folder" / "tokenizer.json"))

    def full(*args, **kwargs):
        raise Exception("No space left on device (os error 28)")  # noqa: TRY002 - what tokenizers raises: no OSError

    monkeypatch.setattr("harness.stages.synthetic.train_tabular", missing_folder)
    with pytest.raises(Exception, match=r"\(os error 2\)"):
        main([*BANDIT, "--output-dir", str(tmp_path / "run")])
    monkeypatch.setattr("harness.stages.synthetic.train_tabular", full)
    assert main([*BANDIT, "--output-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("error: No space left on device (os error 28): free some space (or pass another --output-dir) "
                                                        "and rerun the same command; finished work is kept")  # fmt: skip


def test_read_only_or_immutable_output_folder(tmp_path, capsys):
    """A folder this user may not write: read-only for an ordinary user; for root (who writes
    anyway), immutable (chattr +i), which stops root too."""
    import shutil
    import subprocess

    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    immutable = os.access(parent, os.W_OK) and shutil.which("chattr") and subprocess.run(["chattr", "+i", str(parent)]).returncode == 0
    try:
        if os.access(parent, os.W_OK) and not immutable:
            pytest.skip("no way to make a folder unwritable for this user here")
        assert main([*BANDIT, "--output-dir", str(parent / "run")]) == 2
        err = capsys.readouterr().err
        assert f"cannot write the run folder '{parent / 'run'}'" in err and err.count("\n") == 1
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(parent)])
        parent.chmod(stat.S_IRWXU)


def test_a_folder_in_use_by_another_run_is_refused(tmp_path, capsys):
    from harness.store import RunStore

    holder = RunStore.open(tmp_path / "run", {"task": "bandit"}, seed=0)  # this process holds the lock
    import subprocess
    import sys

    other = subprocess.run([sys.executable, "-m", "harness.cli", *BANDIT, "--output-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert other.returncode == 2 and "is in use by pid" in other.stderr and "Traceback" not in other.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
    del holder


def test_the_summary_of_a_run_holds_no_nan(tmp_path):
    from harness.store import atomic_write_json

    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"final_loss": float("nan")})
    assert not (tmp_path / "r.json").exists()
    assert json.loads(json.dumps({"ok": 1.0})) == {"ok": 1.0}


@pytest.mark.parametrize("command", ["run", "train", "generate"])
def test_a_hub_model_out_of_reach_stops_the_run_before_any_work(tmp_path, capsys, monkeypatch, command):
    """Offline, a hub id that is not in the local cache would make transformers retry for half a
    minute and end in a traceback once pairs were being built: each command that loads the model
    refuses the run at once instead."""
    monkeypatch.setattr("harness.models.hub_reachable", lambda: (False, "no route"))  # as on a machine without the hub, whatever this one reaches
    code = main([command, "--task", "xsum", "--method", "srpo", "--model", "nobody/no-such-model", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "model 'nobody/no-such-model' is not in the Hugging Face cache and the hub cannot be reached (no route)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["run", "judge"])
@pytest.mark.parametrize("judge", ["local-lm", "reward-model"])
def test_a_local_judges_hub_model_out_of_reach_stops_the_run_before_any_work(tmp_path, capsys, monkeypatch, command, judge):
    """The judge's own model is loaded only at the judging stage, after training and generating:
    offline, a hub id that is not in the local cache is refused before the run folder is made."""
    monkeypatch.setattr("harness.models.hub_reachable", lambda: (False, "no route"))
    code = main([command, "--task", "xsum", "--method", "srpo", "--judge", judge, "--judge-arg", "model=nobody/no-such-judge",
                 "--output-dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "model 'nobody/no-such-judge' is not in the Hugging Face cache and the hub cannot be reached (no route)" in err
    assert not (tmp_path / "run").exists()


def test_a_run_whose_hub_model_is_out_of_reach_still_resolves_to_be_judged_or_scored(monkeypatch):
    """Resolving loads nothing: a run trained elsewhere on a hub model is judged again (`harness
    judge RUN_DIR`) where that model cannot load, so only the commands that load it check the hub."""
    from harness.runconfig import resolve

    monkeypatch.setattr("harness.models.hub_reachable", lambda: (False, "no route"))
    assert resolve({"task": "xsum", "methods": ["srpo"], "model": "nobody/no-such-model"}).model == "nobody/no-such-model"


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_the_vllm_engine_without_vllm_stops_the_run_before_any_work(tmp_path, capsys):
    code = main(["run", "--task", "xsum", "--method", "srpo", "--engine", "vllm", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: engine 'vllm' needs vLLM: pip install 'preference-harness[vllm]' (GPU machines only)\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, component", [("run", ["--judge", "openai"]), ("run", ["--engine", "openai", "--engine-arg", "model=m"]), ("generate", ["--engine", "openai", "--engine-arg", "model=m"]),
                                                ("train", ["--engine", "openai", "--engine-arg", "model=m"]),  # xsum has no pairs: the engine builds them
                                                ("judge", ["--judge", "alpaca-eval"]), ("run", ["--judge", "openai", "--judge-arg", "base_url=http://127.0.0.1:9/v1", "--judge-arg", "api_key_env=MY_KEY"])])  # fmt: skip
def test_a_missing_api_key_stops_the_run_before_any_work(tmp_path, capsys, monkeypatch, command, component):
    """OpenAI's API (or a server whose key variable the user named) without its key in the
    environment: found before training and generating, not when the judge is reached hours later."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_KEY", raising=False)
    code = main([command, "--task", "xsum", "--method", "srpo", *component, "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no API key") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_training_checks_the_engine_only_where_it_will_build_pairs(tmp_path):
    """`harness train` needs the engine only to build pairs: for a task with no source of pairs at
    all (XSum), not where the user gives a file or the task names a hub dataset (TL;DR)."""
    from harness.task import build_task

    assert build_task("xsum").names_no_source("preference")
    assert not build_task("xsum", {"data_files": {"preference": str(tmp_path / "p.jsonl")}}).names_no_source("preference")
    assert not build_task("tldr").names_no_source("preference") and not build_task("xsum").names_no_source("test")  # a hub dataset; offline files
    assert build_task("arena-hard").names_no_source("preference")  # no such split


def test_a_chat_task_on_a_model_without_a_chat_template_stops_before_any_work(tiny, tmp_path, capsys):
    """A base model's tokenizer has no chat template, which a chat task's prompts need: said before
    the run folder, with the way out, rather than at the first training."""
    code = main(["run", "--task", "ultrafeedback", "--method", "dpo", "--model", tiny, "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: task 'ultrafeedback' writes chat prompts, and the tokenizer of {tiny!r} has no chat template (a base "
                                 "model?): use an instruct model, or give this one the raw template with --train-arg prompt_format=raw\n")  # fmt: skip
    assert not (tmp_path / "run").exists()
    (tmp_path / "test.jsonl").write_text('{"id": "1", "prompt": "Say hi.", "reference": "Hi."}\n')
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."}\n')
    with pytest.raises(AssertionError, match="the input was accepted"):  # the raw template passes: the run starts (``no_work``)
        main(["run", "--task", "ultrafeedback", "--method", "dpo", "--model", tiny, "--train-arg", "prompt_format=raw", "--output-dir", str(tmp_path / "raw"),
              "--task-arg", f"data_files.test={tmp_path}/test.jsonl", "--task-arg", f"data_files.preference={tmp_path}/pairs.jsonl"])


DATA_MISTAKES = {  # task options naming data the run cannot read -> the message, which `harness data` gives as well
    "test file missing": (["--task-arg", "data_files.test={tmp}/nope.jsonl"], {}, "data file '{tmp}/nope.jsonl' does not exist"),
    "test file lacking a field": (["--task-arg", "data_files.test={tmp}/t.jsonl"], {"t.jsonl": '{"id": 1, "article": "a"}\n'}, "{tmp}/t.jsonl, line 1: field 'reference' is missing"),
    "column renamed from none": (["--task-arg", "data_files.test={tmp}/t.jsonl", "--task-arg", "field_map.article=text"], {"t.jsonl": '{"id": 1, "article": "a", "reference": "r"}\n'},
                                 "field mapping for {tmp}/t.jsonl: column 'text' (for 'article') is not in the file (columns: article, id, reference)"),
}  # fmt: skip


@pytest.mark.parametrize("command", ["run", "dry-run", "train", "generate", "judge"])
@pytest.mark.parametrize("mistake", DATA_MISTAKES)
def test_a_data_file_the_run_cannot_read_stops_it_before_any_work(tiny, tmp_path, capsys, command, mistake):
    """A mistyped path or column was found when the stage read the split: after the model had loaded,
    with a run folder written, and never by --dry-run. Every command that reads the test split (train
    builds XSum's pairs from it) now refuses the run first."""
    flags, files, message = DATA_MISTAKES[mistake]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    fill = lambda text: text.replace("{tmp}", str(tmp_path))  # noqa: E731
    argv = ["run", "--dry-run"] if command == "dry-run" else [command]
    code = main([*argv, "--task", "xsum", "--method", "srpo", "--model", tiny, "--limit", "2", *map(fill, flags), "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {fill(message)}\n"
    assert not (tmp_path / "run").exists()


def test_the_training_data_is_checked_by_the_commands_that_train_only(tiny, tmp_path, capsys, monkeypatch):
    """A missing pairs file, or a task with no source of pairs and none to build them from, stops
    `run` and `train`; `generate` reads no pairs, and goes on to its own first need."""
    monkeypatch.setattr("harness.task.hub_reachable", lambda: (False, "no route"))
    pairs = ["--task-arg", f"data_files.preference={tmp_path}/nope.jsonl"]
    for command in (["run"], ["run", "--dry-run"], ["train"]):
        assert main([*command, "--task", "xsum", "--method", "srpo", "--model", tiny, *pairs, "--output-dir", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err == f"error: data file '{tmp_path}/nope.jsonl' does not exist\n"
        assert main([*command, "--task", "tldr", "--method", "srpo", "--model", tiny, "--build-pairs", "0", "--output-dir", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err.startswith("error: no source for split 'preference' of task 'tldr'") and not (tmp_path / "run").exists()
    assert main(["generate", "--task", "xsum", "--method", "srpo", "--model", tiny, *pairs, "--output-dir", str(tmp_path / "run")]) == 2
    assert "method 'srpo' is not trained" in capsys.readouterr().err


def test_a_chat_tasks_missing_references_stop_the_run_before_any_work(tiny, tmp_path, capsys):
    """Arena-Hard keeps its references apart from its prompts: an answers file that is not there
    was found after training, when the test split was read."""
    (tmp_path / "q.jsonl").write_text('{"uid": "a1", "prompt": "Say hi."}\n')
    code = main(["run", "--dry-run", "--task", "arena-hard", "--method", "srpo", "--model", tiny, "--train-arg", "prompt_format=raw",
                 "--task-arg", f"data_files.test={tmp_path}/q.jsonl", "--task-arg", f"reference_file={tmp_path}/answers.jsonl"])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == f"error: reference answers '{tmp_path}/answers.jsonl' do not exist (set reference_model or reference_file)\n"
