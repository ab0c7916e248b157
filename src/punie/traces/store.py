"""The SQLite trace store (``PUNIE_HOME/traces.sqlite``).

One row per agent conversation in ``traces`` (the messages and tool schemas as
JSON, exactly as the model saw them), one row per tool call in ``tool_calls``
(arguments, result, error flag, timing) and one row per model turn in ``turns``
(the raw text the model produced, generation time).

The schema grows by named, append-only migrations: each is a function applied
once, in order, and recorded in the ``_migrations`` table. Never edit or reorder
a released migration; add a new one at the end.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import DataError

# Outcomes punie writes. An episode scored by checks (punie eval --tasks, punie agent run --check-...)
# "passed" or "failed" them (the failed checks are in meta["failed_checks"]); one without checks that
# ended with a final answer is only "finished": nothing said whether the job was done.
# `punie traces mark` records a human verdict with the same names.
PASSED = "passed"
FAILED = "failed"
FINISHED = "finished"
MAX_STEPS = "max_steps"
ERROR = "error"
INCOMPLETE = "incomplete"
OUTCOMES = (PASSED, FAILED, FINISHED, MAX_STEPS, ERROR, INCOMPLETE, "unknown")
# Names punie wrote before m004_outcome_names; "success" meant only that the loop ended.
RENAMED_OUTCOMES = {"success": FINISHED, "failure": FAILED}


def m001_traces(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE traces (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            source TEXT NOT NULL,
            task TEXT,
            category TEXT,
            model TEXT,
            adapter TEXT,
            outcome TEXT NOT NULL,
            duration_s REAL,
            tools_json TEXT NOT NULL,
            messages_json TEXT NOT NULL,
            meta_json TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX traces_source_category ON traces (source, category)")


def m002_tool_calls(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE tool_calls (
            trace_id INTEGER NOT NULL REFERENCES traces(id) ON DELETE CASCADE,
            message_index INTEGER NOT NULL,
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            arguments_json TEXT NOT NULL,
            result TEXT,
            is_error INTEGER NOT NULL DEFAULT 0,
            duration_s REAL,
            PRIMARY KEY (trace_id, message_index, position)
        )""")


def m003_turns(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE turns (
            trace_id INTEGER NOT NULL REFERENCES traces(id) ON DELETE CASCADE,
            message_index INTEGER NOT NULL,
            raw TEXT,
            duration_s REAL,
            PRIMARY KEY (trace_id, message_index)
        )""")


def m004_outcome_names(db: sqlite3.Connection) -> None:
    # "success" was written whenever the loop ended with an answer, judged or not: it becomes "finished".
    # "failure" (only ever a human verdict) becomes "failed", the name checks use.
    for old, new in RENAMED_OUTCOMES.items():
        db.execute("UPDATE traces SET outcome = ? WHERE outcome = ?", (new, old))


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_traces, m002_tool_calls, m003_turns,
                                                          m004_outcome_names]


def migrate(db: sqlite3.Connection, migrations: list[Callable[[sqlite3.Connection], None]] | None = None) -> list[str]:
    """Apply the migrations not yet recorded, in order; return the names applied now."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.commit()
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for migration in MIGRATIONS if migrations is None else migrations:
        name = migration.__name__
        if name in done:
            continue
        # One transaction per migration: its DDL and its record land together or not at all
        # (sqlite3 does not open a transaction before DDL on its own, hence the explicit BEGIN).
        db.execute("BEGIN")
        try:
            migration(db)
            db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, _now()))
        except BaseException:
            db.rollback()
            raise
        db.commit()
        applied.append(name)
    return applied


@dataclass
class ToolCallRecord:
    message_index: int
    position: int
    name: str
    arguments: dict[str, Any]
    result: str | None = None
    is_error: bool = False
    duration_s: float | None = None


@dataclass
class TurnRecord:
    message_index: int
    raw: str | None = None
    duration_s: float | None = None


@dataclass
class Trace:
    """One conversation: messages in training form (tool call arguments as objects)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    source: str = "agent"
    task: str | None = None
    category: str | None = None
    model: str | None = None
    adapter: str | None = None
    outcome: str = "unknown"
    duration_s: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    id: int | None = None
    created_at: str | None = None


class TraceStore:
    """Read and write traces; safe to share between the threads of one process."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else paths.traces_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            # WAL: readers do not block the writer (the proxy writes while 'punie traces list' reads), and
            # with synchronous=NORMAL a commit does not wait for the disk; a crash can lose only the last commits.
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            migrate(self._db)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a usable trace store ({exc}); move it aside and try again.") from exc
        self._lock = threading.Lock()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def migrations(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM _migrations ORDER BY rowid")]

    def add(self, trace: Trace) -> int:
        """Store a new trace; sets and returns its id."""
        with self._lock, self._db:
            trace.created_at = trace.created_at or _now()
            cur = self._db.execute(
                "INSERT INTO traces (created_at, source, task, category, model, adapter, outcome, duration_s, "
                "tools_json, messages_json, meta_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trace.created_at, trace.source, trace.task, trace.category, trace.model, trace.adapter,
                 trace.outcome, trace.duration_s, _dumps(trace.tools), _dumps(trace.messages), _dumps(trace.meta)))
            trace.id = int(cur.lastrowid or 0)
            self._insert_children(trace)
        return trace.id

    def replace(self, trace: Trace) -> None:
        """Overwrite a stored trace (the proxy extends a conversation as it goes on)."""
        if trace.id is None:
            raise ValueError("replace() needs a trace with an id")
        with self._lock, self._db:
            self._db.execute(
                "UPDATE traces SET task = ?, category = ?, model = ?, adapter = ?, outcome = ?, duration_s = ?, "
                "tools_json = ?, messages_json = ?, meta_json = ? WHERE id = ?",
                (trace.task, trace.category, trace.model, trace.adapter, trace.outcome, trace.duration_s,
                 _dumps(trace.tools), _dumps(trace.messages), _dumps(trace.meta), trace.id))
            self._db.execute("DELETE FROM tool_calls WHERE trace_id = ?", (trace.id,))
            self._db.execute("DELETE FROM turns WHERE trace_id = ?", (trace.id,))
            self._insert_children(trace)

    def _insert_children(self, trace: Trace) -> None:
        self._db.executemany(
            "INSERT INTO tool_calls (trace_id, message_index, position, name, arguments_json, result, is_error, "
            "duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(trace.id, c.message_index, c.position, c.name, _dumps(c.arguments), c.result, int(c.is_error),
              c.duration_s) for c in trace.tool_calls])
        self._db.executemany(
            "INSERT INTO turns (trace_id, message_index, raw, duration_s) VALUES (?, ?, ?, ?)",
            [(trace.id, t.message_index, t.raw, t.duration_s) for t in trace.turns])

    def get(self, trace_id: int) -> Trace:
        traces = list(self.iter_traces(ids=[trace_id]))
        if not traces:
            raise DataError(f"no trace with id {trace_id} in {self.path}; see 'punie traces list'.")
        return traces[0]

    def iter_traces(self, *, source: str | None = None, category: str | None = None, outcome: str | None = None,
                    ids: list[int] | None = None, limit: int | None = None, newest_first: bool = False,
                    with_children: bool = True) -> Iterator[Trace]:
        """Traces matching every given filter, oldest first unless ``newest_first``."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("source", source), ("category", category), ("outcome", outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        sql = "SELECT * FROM traces" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id" + (" DESC" if newest_first else "") + (f" LIMIT {int(limit)}" if limit else "")
        cursor = self._db.execute(sql, args)
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            trace = _trace_from_row(dict(zip(names, row, strict=True)))
            if with_children:
                self._load_children(trace)
            yield trace

    def _load_children(self, trace: Trace) -> None:
        rows = self._db.execute(
            "SELECT message_index, position, name, arguments_json, result, is_error, duration_s FROM tool_calls "
            "WHERE trace_id = ? ORDER BY message_index, position", (trace.id,))
        trace.tool_calls = [ToolCallRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], bool(r[5]), r[6]) for r in rows]
        rows = self._db.execute("SELECT message_index, raw, duration_s FROM turns WHERE trace_id = ? "
                                "ORDER BY message_index", (trace.id,))
        trace.turns = [TurnRecord(r[0], r[1], r[2]) for r in rows]

    def set_outcome(self, trace_id: int, outcome: str) -> None:
        if outcome in RENAMED_OUTCOMES:
            raise DataError(f"outcome {outcome!r} is no longer used: mark a trace 'passed' when it did the job, "
                            f"'failed' when it did not ('finished' only says the agent ended with an answer)")
        if outcome not in OUTCOMES:
            raise DataError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        with self._lock, self._db:
            cur = self._db.execute("UPDATE traces SET outcome = ? WHERE id = ?", (outcome, trace_id))
        if cur.rowcount == 0:
            raise DataError(f"no trace with id {trace_id} in {self.path}; see 'punie traces list'.")

    def delete(self, *, source: str) -> int:
        """Delete every trace of one source (the demo generator replaces its own traces); returns the count."""
        with self._lock, self._db:
            cur = self._db.execute("DELETE FROM traces WHERE source = ?", (source,))
        return cur.rowcount

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM traces").fetchone()[0])


def _trace_from_row(row: dict[str, Any]) -> Trace:
    return Trace(messages=json.loads(row["messages_json"]), tools=json.loads(row["tools_json"]), source=row["source"],
                 task=row["task"], category=row["category"], model=row["model"], adapter=row["adapter"],
                 outcome=row["outcome"], duration_s=row["duration_s"], meta=json.loads(row["meta_json"]),
                 id=row["id"], created_at=row["created_at"])


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
