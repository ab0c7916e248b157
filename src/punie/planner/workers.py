"""Worker profiles: what each runnable model is worth per subtask type, as ``punie eval`` measured it.

A worker is anything punie can run on a subtask: the base model, the base with an adapter, or an
OpenAI-compatible endpoint. ``workers.json`` holds one profile per worker::

    {"workers": [{"name": "demo", "model": "default", "adapter": "adapters/demo",
                  "success": {"read": 0.71, "edit": 0.38, ...}, "cases": {"read": 14, ...},
                  "tokens": {"read": 31.5, ...}, "latency_s": {"read": 0.9, ...},
                  "price_per_token": 1.0, "sources": ["runs/demo/results.json"]}]}

Cost is counted in generated tokens times ``price_per_token``: 1.0 for a local worker, a declared
price in the same unit for an endpoint (a remote model at 20x the cost of a local token is 20.0).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from punie import fileio
from punie.errors import DataError, json_error_text, validation_problems
from punie.planner.workflow import SUBTASK_TYPES, SubtaskType


class WorkerProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    model: str | None = None  # "default", a model directory or a repo id (local workers)
    adapter: str | None = None
    endpoint: str | None = None  # base URL of an OpenAI-compatible server
    success: dict[SubtaskType, float]
    cases: dict[SubtaskType, int] = {}  # eval cases behind each rate (0 or missing: declared, not measured)
    tokens: dict[SubtaskType, float]  # mean tokens generated per subtask
    latency_s: dict[SubtaskType, float]  # mean wall seconds per subtask
    price_per_token: float = Field(default=1.0, ge=0)
    sources: list[str] = []

    @model_validator(mode="after")
    def _covers_every_type(self) -> WorkerProfile:
        for field in ("success", "tokens", "latency_s"):
            values = getattr(self, field)
            missing = [t for t in SUBTASK_TYPES if t not in values]
            if missing:
                raise ValueError(f"{field} has no value for subtask type(s) {', '.join(missing)}; "
                                 "profile the worker on a suite with those categories, or declare them")
            out_of_range = {t: v for t, v in values.items() if v < 0 or (field == "success" and v > 1)}
            if out_of_range:
                raise ValueError(f"{field} out of range: {out_of_range}")
        return self


class WorkerSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: list[WorkerProfile] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> WorkerSet:
        names = [w.name for w in self.workers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"worker names must be unique; repeated: {', '.join(repeated)}")
        return self

    def by_name(self) -> dict[str, WorkerProfile]:
        return {w.name: w for w in self.workers}

    def get(self, name: str) -> WorkerProfile:
        found = self.by_name().get(name)
        if found is None:
            raise DataError(f"no worker named {name!r}; workers.json has {', '.join(self.by_name())}.")
        return found


def read_workers(path: Path) -> WorkerSet:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; write one with 'punie planner profile --results ...'.") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({json_error_text(exc, line=True)}).") from None
    try:
        return WorkerSet.model_validate(raw)
    except ValidationError as exc:
        raise DataError(f"{path}: not a worker set: {'; '.join(validation_problems(exc, root='file'))}") from None


def write_workers(path: Path, workers: WorkerSet) -> None:
    fileio.write_json(Path(path), workers.model_dump(exclude_none=True))
