import json
import os

import pytest

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


def test_manifest_records_versions_seed_and_inputs(tmp_path):
    store = RunStore.open(tmp_path / "run", {"task": "x"}, seed=5)
    store.record_input("data", {"rows": 3, "hash": "abc"})
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["seed"] == 5 and "torch" in manifest["versions"] and manifest["inputs"]["data"]["rows"] == 3
    assert oct((store.root / "manifest.json").stat().st_mode & 0o777) != "0o600"
