"""The verdict cache: SQLite, keyed by everything that could change a verdict.

The key hashes the judge's configuration (model, endpoint, sampling, parser), the prompt
template's text and the exact rendered prompt (so the pair and its order). Changing the model
or editing a prompt file therefore never reuses an old verdict, and a rerun of the same judging
makes no request it already made. Failed verdicts are not cached: a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

COMMIT_EVERY = 64


def verdict_key(config: dict, template: str, prompt: str) -> str:
    blob = json.dumps({"config": config, "template": template, "prompt": prompt}, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


class VerdictCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")  # several runs may judge at once
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a crash loses at most the last verdicts, which are re-asked
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, preference REAL NOT NULL, rationale TEXT, raw TEXT, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, created TEXT DEFAULT CURRENT_TIMESTAMP)"
        )
        self._db.commit()
        self._pending = 0

    def get(self, key: str) -> tuple[float, str] | None:
        with self._lock:
            row = self._db.execute("SELECT preference, rationale FROM verdicts WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, key: str, preference: float, rationale: str, raw: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts (key, preference, rationale, raw, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                (key, preference, rationale, raw, prompt_tokens, completion_tokens),
            )
            self._pending += 1
            if self._pending >= COMMIT_EVERY:  # a crash loses at most these, and they are asked again
                self._db.commit()
                self._pending = 0

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()
