import json
import os

import pytest
import torch
from rich.console import Console

from harness.store import RunStore, atomic_write_text


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_stage_is_done_only_for_the_same_key_and_existing_artifacts(tmp_path):
    store = RunStore.open(tmp_path / "run", {"task": "x"}, seed=1)
    stage = store.stage("train/a", {"lr": 1})
    assert not stage.done
    store.write_json("out/a.json", {"x": 1})
    stage.finish(["out/a.json"])
    assert store.stage("train/a", {"lr": 1}).done
    assert not store.stage("train/a", {"lr": 2}).done
    (store.root / "out/a.json").unlink()
    assert not store.stage("train/a", {"lr": 1}).done
    store.write_json("out/a.json", {"x": 1})
    for edited in ("{", "[]"):  # a record edited by hand is no record: the stage is done again, no traceback
        (store.root / "stages/train/a.json").write_text(edited)
        assert not store.stage("train/a", {"lr": 1}).done


def test_manifest_records_versions_seed_and_inputs(tmp_path):
    store = RunStore.open(tmp_path / "run", {"task": "x"}, seed=5)
    store.record_input("data", {"rows": 3, "hash": "abc"})
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["seed"] == 5 and "torch" in manifest["versions"] and manifest["inputs"]["data"]["rows"] == 3
    assert oct((store.root / "manifest.json").stat().st_mode & 0o777) != "0o600"
    assert manifest["device"] == f"CPU, {torch.get_num_threads()} threads"


def test_the_manifest_names_the_gpus_a_run_computes_on(tmp_path, monkeypatch):
    names = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: names[i])
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    store = RunStore.open(tmp_path / "run", {"task": "x"}, seed=0)
    assert store.read_json("manifest.json")["device"] == "2 x NVIDIA H100 80GB HBM3, 1 x NVIDIA A100-SXM4-40GB (CUDA 13.0)"


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    from harness.store import JsonlLog

    path = tmp_path / "judgments.jsonl"
    log = JsonlLog(path)
    log.append([{"i": 0}, {"i": 1}])
    with path.open("ab") as fh:
        fh.write(b'{"i": 2, "pref')  # a kill mid-write
    assert JsonlLog(path).read() == [{"i": 0}, {"i": 1}]
    JsonlLog(path).append([{"i": 2}])
    assert JsonlLog(path).read() == [{"i": 0}, {"i": 1}, {"i": 2}]  # nothing after the tear is lost or hidden
    assert path.read_bytes().count(b"\n") == 3


def test_line_separators_inside_a_text_stay_in_their_row(tmp_path):
    from harness.store import JsonlLog

    text = "first\u2028second\u2029third\x85fourth\x0bfifth\x1cend"
    log = JsonlLog(tmp_path / "g.jsonl")
    log.append([{"text": text}, {"text": "next"}])
    assert log.read() == [{"text": text}, {"text": "next"}]


def test_a_corrupt_line_in_the_middle_is_an_error_not_a_silent_stop(tmp_path):
    from harness.errors import HarnessError
    from harness.store import JsonlLog

    path = tmp_path / "g.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(HarnessError, match="line 2: not a JSON row"):
        JsonlLog(path).read()


def test_csv_cells_that_would_run_as_formulas_are_inert():
    from harness.leaderboards.page import Table

    import csv
    import io

    table = Table(list("abcdefg"), [["=HYPERLINK(\"http://x\")", "-0.25", "+1", "@SUM(A1)", "-x", "plain", -0.5]]).to_csv()
    row = list(csv.reader(io.StringIO(table)))[1]
    assert row == ["'=HYPERLINK(\"http://x\")", "-0.25", "+1", "'@SUM(A1)", "'-x", "plain", "-0.5"]  # numbers stay numbers


def test_a_retraining_killed_midway_leaves_no_record_to_vouch_for_what_it_half_wrote(tmp_path, monkeypatch):
    """A method trained on new inputs rewrites train/NAME/ in place. Killed before it finishes, the
    record of the first inputs must be gone: a rerun of those inputs retrains rather than take the
    half-written adapter and metrics as its own."""
    from harness.stages import train as train_stage

    trained = []

    class Trainer:  # writes the artifacts as the real one does, then dies where asked
        def __init__(self, inputs, output_dir):
            self.inputs, self.output_dir = inputs, output_dir

        def train(self):
            trained.append(self.inputs["lr"])
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "result.json").write_text(json.dumps({"lr": self.inputs["lr"]}))
            if self.inputs.get("killed"):
                raise KeyboardInterrupt
            return self.inputs["lr"]

    monkeypatch.setattr(train_stage, "Trainer", Trainer)
    store = RunStore.open(tmp_path / "run", {"task": "x"}, seed=1)
    console = Console(quiet=True)
    assert train_stage._trained(store, "dpo", {"lr": 1}, console) == 1
    with pytest.raises(KeyboardInterrupt):
        train_stage._trained(store, "dpo", {"lr": 2, "killed": True}, console)
    assert train_stage._trained(store, "dpo", {"lr": 1}, console) == 1 and trained == [1, 2, 1]  # retrained, not read from lr 2's files


def test_neighbours_are_this_users_run_folders_beside_it(tmp_path, monkeypatch):
    """Where the parent is shared (``--output-dir /tmp/run``), a folder another user wrote is not a
    source of stages to copy: its weights and pickles would become this run's."""
    mine = RunStore.open(tmp_path / "mine", {"task": "x"}, seed=1)
    other = RunStore.open(tmp_path / "other", {"task": "x"}, seed=1)
    (tmp_path / "notes").mkdir()  # not a run folder
    (tmp_path / "file.txt").write_text("x")
    assert [n.root for n in mine.neighbours()] == [other.root]
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    assert mine.neighbours() == []
