"""The SQLite trace store and its migrations."""

from __future__ import annotations

import json
import sqlite3

import pytest

from punie import paths
from punie.errors import DataError
from punie.traces.store import MIGRATIONS, ToolCallRecord, Trace, TraceStore, TurnRecord, migrate


def _tables(db_path):
    with sqlite3.connect(db_path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _trace(**kw):
    messages = [{"role": "user", "content": "read a"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "read_file", "arguments": {"path": "a"}}}]},
                {"role": "tool", "content": "A"}, {"role": "assistant", "content": "It says A."}]
    return Trace(messages=messages, tools=[{"type": "function", "function": {"name": "read_file"}}],
                 category="read", model="m", outcome="finished",
                 tool_calls=[ToolCallRecord(1, 0, "read_file", {"path": "a"}, "A", False, 0.01)],
                 turns=[TurnRecord(1, "raw1", 0.5), TurnRecord(3, "raw2", 0.25)], **kw)


def test_fresh_store_lives_under_punie_home_and_applies_all_migrations(punie_home):
    with TraceStore() as store:
        assert store.path == paths.traces_db()
        assert str(store.path).startswith(str(punie_home))
        assert store.migrations() == [m.__name__ for m in MIGRATIONS]
    assert {"traces", "tool_calls", "turns", "_migrations"} <= _tables(paths.traces_db())


def test_migrations_are_applied_once(tmp_path):
    db = sqlite3.connect(tmp_path / "t.sqlite")
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    assert db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def test_upgrade_from_an_older_schema_keeps_the_data(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    assert migrate(db, MIGRATIONS[:1]) == ["m001_traces"]
    db.execute("INSERT INTO traces (created_at, source, outcome, tools_json, messages_json) VALUES "
               "('2024-01-01T00:00:00+00:00', 'agent', 'success', '[]', ?)",
               (json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),))
    db.commit()
    db.close()
    assert _tables(path) == {"traces", "_migrations", "sqlite_sequence"}

    with TraceStore(path) as store:
        assert store.migrations() == ["m001_traces", "m002_tool_calls", "m003_turns", "m004_outcome_names"]
        old = store.get(1)
        assert old.messages[1]["content"] == "hello" and old.tool_calls == [] and old.turns == []
        new_id = store.add(_trace())
        assert store.get(new_id).tool_calls[0].result == "A"


def test_a_failing_migration_is_rolled_back(tmp_path, monkeypatch):
    def m004_broken(db):
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk on fire")

    db = sqlite3.connect(tmp_path / "t.sqlite")
    migrate(db)
    with pytest.raises(RuntimeError):
        migrate(db, [*MIGRATIONS, m004_broken])
    assert "half_done" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "m004_broken" not in {r[0] for r in db.execute("SELECT name FROM _migrations")}


def test_add_get_roundtrip(tmp_path):
    with TraceStore(tmp_path / "t.sqlite") as store:
        trace_id = store.add(_trace(meta={"k": 1}))
        got = store.get(trace_id)
    assert got.messages == _trace().messages
    assert got.tool_calls == _trace().tool_calls and got.turns == _trace().turns
    assert (got.category, got.model, got.outcome, got.meta, got.source) == ("read", "m", "finished", {"k": 1}, "agent")
    assert got.created_at


def test_replace_filters_outcome_and_delete(tmp_path):
    with TraceStore(tmp_path / "t.sqlite") as store:
        first = store.add(_trace())
        second = store.add(_trace(source="demo"))
        trace = store.get(first)
        trace.messages.append({"role": "user", "content": "more"})
        trace.turns = trace.turns[:1]
        store.replace(trace)
        assert store.get(first).messages[-1]["content"] == "more"
        assert len(store.get(first).turns) == 1
        assert [t.id for t in store.iter_traces(source="demo")] == [second]
        assert [t.id for t in store.iter_traces(newest_first=True, limit=1)] == [second]
        store.set_outcome(first, "failed")
        assert [t.id for t in store.iter_traces(outcome="failed")] == [first]
        with pytest.raises(DataError, match="not one of"):
            store.set_outcome(first, "great")
        with pytest.raises(DataError, match="no longer used: mark a trace 'passed' when it did the job"):
            store.set_outcome(first, "success")
        with pytest.raises(DataError, match="no trace with id 99"):
            store.set_outcome(99, "failed")
        assert store.delete(source="demo") == 1
        assert store.count() == 1
        # the children of a deleted trace go with it
        rows = store._db.execute("SELECT COUNT(*) FROM turns WHERE trace_id = ?", (second,)).fetchone()[0]
        assert rows == 0


def test_get_missing_trace_names_the_fix(tmp_path):
    with TraceStore(tmp_path / "t.sqlite") as store, pytest.raises(DataError, match="punie traces list"):
        store.get(12)


def test_a_file_that_is_not_sqlite_is_reported(tmp_path):
    bad = tmp_path / "traces.sqlite"
    bad.write_text("this is not a database, it is a text file " * 20)
    with pytest.raises(DataError, match="not a usable trace store"):
        TraceStore(bad)
    assert bad.read_text().startswith("this is not a database")



def test_outcome_names_migration_renames_success_to_finished(tmp_path):
    """A store written before m004: "success" (the loop ended) becomes "finished", "failure" becomes "failed"."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    migrate(db, MIGRATIONS[:3])
    for outcome in ("success", "failure", "max_steps", "success"):
        db.execute("INSERT INTO traces (created_at, source, outcome, tools_json, messages_json) VALUES "
                   "('2024-01-01T00:00:00+00:00', 'agent', ?, '[]', '[]')", (outcome,))
    db.commit()
    db.close()
    with TraceStore(path) as store:
        assert store.migrations()[-1] == "m004_outcome_names"
        assert [t.outcome for t in store.iter_traces()] == ["finished", "failed", "max_steps", "finished"]
        assert list(store.iter_traces(outcome="success")) == []
