"""A persistent response cache: SQLite in WAL mode, one row per finished request.

Why: researchers pay per token and their runs get interrupted. Every answer is committed the moment it
arrives (WAL with ``synchronous=NORMAL`` survives a killed process), so re-running the same command
sends no request whose answer was already paid for. The key is a hash of where the request goes, the
model, the messages and the parameters; never the API key. Several processes may share one file
(``make -j``): SQLite serialises the writers, and ``busy_timeout`` makes them wait instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from asyncpipe.errors import UserError

SCHEMA_VERSION = 1


def cache_key(identity: str, kind: str, payload: dict[str, Any]) -> str:
    blob = json.dumps([SCHEMA_VERSION, identity, kind, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), isolation_level=None, timeout=60, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=60000")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise UserError(f"cache {path}: cannot open ({exc}); pass another --cache path") from None
        except OSError as exc:
            raise UserError(f"cache {path}: {exc.strerror}") from None

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, kind: str, value: dict[str, Any]) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO responses (key, kind, value) VALUES (?, ?, ?)",
            (key, kind, json.dumps(value, ensure_ascii=False)),
        )

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
