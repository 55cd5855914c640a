import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real ``harness`` console entry point in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama and its tokenizer (tests/tiny.py), built once per test module: its folder."""
    from tiny import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tiny_bos(tmp_path_factory):
    """The tiny Llama with a tokenizer that puts a BOS before every text, as Llama's does: its folder."""
    from tiny import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("tiny-bos") / "model", bos=True))


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory):
    """The tiny Llama with a SentencePiece-style tokenizer and a BOS, as Llama 2's: its folder."""
    from tiny import build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("tiny-spm") / "model", bos=True, spm=True))
