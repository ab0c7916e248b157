"""A training run directory, read and written in one place.

Layout::

    adapters.safetensors     best (or last) adapter weights: what mlx-lm loads
    adapter_config.json      mlx-lm's adapter settings, plus punie's resolved config
    manifest.json            how the run was made (config, base model identity, data) and how it went
    metrics.jsonl            every train/val report
    checkpoints/step-NNNNNN/ adapters.safetensors, optimizer.safetensors, state.json

Training, ``punie train --resume``, the eval's adapter/base check and the
report's loss curves all go through this module, so each field is spelled once.
Writes are atomic; only checkpoint directories holding ``state.json`` count, so
a kill at any moment leaves the previous good state.

The manifest says "running" while a process trains. A process killed with
SIGKILL cannot record that it stopped, so the manifest also names the training
process (pid and start time): a "running" run whose process is gone reads as
"interrupted".
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie import fileio
from punie.errors import DataError
from punie.models.loading import ADAPTER_CONFIG, read_adapter_config
from punie.models.loading import ADAPTER_WEIGHTS as ADAPTERS
from punie.models.registry import read_model_config

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
STATE = "state.json"  # a checkpoint's loop state; written last, so its presence marks the checkpoint complete
OPTIMIZER = "optimizer.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


@dataclass(frozen=True)
class BaseModelIdentity:
    """Which base model weights an adapter was trained on, as recorded in its manifest."""

    spec: str | None = None  # what the user passed to --model
    path: str | None = None  # the directory it resolved to
    model_id: str | None = None  # punie's id in the model's config.json, when it has one
    source_sha256: str | None = None  # hash of the GGUF file a punie import was made from
    config_sha256: str | None = None
    weights_sha256: dict[str, str] = field(default_factory=dict)  # safetensors file name -> sha256

    @classmethod
    def of_model_dir(cls, path: Path | str, spec: str | None = None) -> BaseModelIdentity:
        """Hash a local model directory (config.json and every *.safetensors)."""
        root = Path(path)
        config_file = root / "config.json"
        if not config_file.is_file():
            return cls(spec=spec, path=str(path))
        punie_meta = read_model_config(root).get("punie") or {}
        return cls(spec=spec, path=str(path), model_id=punie_meta.get("model_id"),
                   source_sha256=punie_meta.get("source_sha256"), config_sha256=file_sha256(config_file),
                   weights_sha256={w.name: file_sha256(w) for w in sorted(root.glob("*.safetensors"))})

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BaseModelIdentity:
        weights = record.get("weights_sha256")
        return cls(spec=record.get("spec"), path=record.get("path"), model_id=record.get("model_id"),
                   source_sha256=record.get("source_sha256"), config_sha256=record.get("config_sha256"),
                   weights_sha256=dict(weights) if isinstance(weights, dict) else {})

    def to_record(self) -> dict[str, Any]:
        return {"spec": self.spec or "default", "path": self.path, "model_id": self.model_id,
                "source_sha256": self.source_sha256, "config_sha256": self.config_sha256,
                "weights_sha256": self.weights_sha256}

    def describe(self) -> str:
        """The --model value that names this base, and its id when known."""
        where = self.path or self.spec or "an unknown base"
        return f"{where} ({self.model_id})" if self.model_id else where

    def difference(self, base_dir: Path) -> str:
        """'' when ``base_dir`` holds these weights (or nothing is recorded to tell); else what differs.

        Cheap evidence first (punie's model id, the GGUF source hash); the
        weights are hashed only when those cannot decide. config.json is not
        compared: a re-import with a newer chat template rewrites it, not the weights.
        """
        config_file = base_dir / "config.json"
        have = (read_model_config(base_dir).get("punie") or {}) if config_file.is_file() else {}
        if self.model_id and have.get("model_id") and self.model_id != have["model_id"]:
            return f"model id {self.model_id!r} vs {have['model_id']!r}"
        if self.source_sha256 and have.get("source_sha256"):
            if self.source_sha256 != have["source_sha256"]:
                return f"source sha256 {self.source_sha256[:12]}… vs {have['source_sha256'][:12]}…"
            return ""
        if not self.weights_sha256:
            return ""
        files = {w.name: w for w in sorted(base_dir.glob("*.safetensors"))}
        if not files:
            return ""  # not a local safetensors model: the shape check is all there is
        if set(files) != set(self.weights_sha256):
            return f"weight files {sorted(self.weights_sha256)} vs {sorted(files)}"
        for name, want in sorted(self.weights_sha256.items()):
            got = file_sha256(files[name])
            if got != want:
                return f"{name} sha256 {want[:12]}… vs {got[:12]}…"
        return ""


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so an eval hashes a base model once."""
    from punie.models.gguf import sha256_file

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}).") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    return data


@dataclass(frozen=True)
class OutputPlan:
    """What a run will do with its output directory, decided before anything is written."""

    checkpoint: Checkpoint | None = None  # resume from it
    replace: bool = False  # --force: delete the directory's contents first
    restart: bool = False  # --resume of a run killed before its first checkpoint: start it again


@dataclass(frozen=True)
class RunDir:
    """One training output directory (also an adapter directory: mlx-lm loads it as is)."""

    path: Path

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def adapter_file(self) -> Path:
        return self.path / ADAPTERS

    # ---- manifest.json -------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when this is not a punie training run."""
        return _json_file(self.manifest_file) if self.manifest_file.is_file() else None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        fileio.write_json(self.manifest_file, manifest)

    def saved_config(self) -> dict[str, Any]:
        """The resolved training settings the run was made with."""
        manifest = self.read_manifest()
        if manifest is None:
            raise DataError(f"{self.manifest_file} does not exist; {self.path} is not a punie training run.")
        config = manifest.get("config")
        if not isinstance(config, dict):
            raise DataError(f"{self.manifest_file}: no 'config' object; the run cannot be continued.")
        return config

    def settings_to_resume(self, kind: str) -> dict[str, Any]:
        """The settings ``--resume`` continues with (unset ones left out); ConfigError when this is no such run.

        ``kind`` names the run in the message ("punie training", "punie dpo").
        """
        from punie.errors import ConfigError

        if self.read_manifest() is None:
            raise ConfigError(f"--resume: {self.manifest_file} does not exist; {self.path} is not a {kind} run "
                              "(start without --resume).")
        return {k: v for k, v in self.saved_config().items() if v is not None}

    def status(self) -> str | None:
        """The manifest's status, with a "running" run whose process is gone reported as "interrupted"."""
        manifest = self.read_manifest()
        if manifest is None:
            return None
        status = manifest.get("status")
        if status == "running" and not training_process_alive(manifest.get("process")):
            return "interrupted"
        return status

    def trained_by_other_process(self) -> int | None:
        """The pid of another live process training this run right now, if any."""
        manifest = self.read_manifest()
        if manifest is None or manifest.get("status") != "running":
            return None
        process: dict[str, Any] = manifest.get("process") or {}
        if not training_process_alive(process) or process["pid"] == os.getpid():
            return None  # gone (killed), or this very process, which left it "running" and is not training it now
        return int(process["pid"])

    # ---- claiming the directory ----------------------------------------------------------------
    def plan_output(self, settings: dict[str, Any], fixed: Sequence[str], *, resume: bool, force: bool,
                    kind: str = "punie training") -> OutputPlan:
        """Refuse, resume, restart or replace, from what the directory holds; nothing is written here.

        ``settings`` are the new run's resolved settings; ``--resume`` refuses when any ``fixed`` one differs
        from the saved run's. ``kind`` names the run in messages.
        """
        from punie.errors import ConfigError

        output = self.path
        if output.exists() and not output.is_dir():
            raise ConfigError(f"--output {output} is a file; choose a directory.")
        exists = output.is_dir() and any(output.iterdir())
        manifest = self.read_manifest() if exists else None
        pid = self.trained_by_other_process() if manifest is not None else None
        if pid is not None:
            raise ConfigError(f"{output} is being trained right now by process {pid}; wait for it to finish or stop "
                              "it (Ctrl-C), or choose another --output.")
        if resume:
            if manifest is None:
                what = f"holds no {kind} run" if not exists else f"is not a {kind} run (no manifest.json)"
                raise ConfigError(f"--resume: {output} {what}; start without --resume, or choose another --output.")
            saved = self.saved_config()
            changed = [k for k in fixed if saved.get(k) != settings.get(k)]
            if changed:
                raise ConfigError(f"--resume: {', '.join(changed)} differ from the run in {output}; "
                                  "resume with the same settings or start a new --output.")
            checkpoint = self.latest_checkpoint()
            return OutputPlan(checkpoint=checkpoint, restart=checkpoint is None)
        if exists and not force:
            if manifest is None:
                raise ConfigError(f"{output} already exists, is not empty and is not a {kind} run; "
                                  "choose another --output (--force would delete its contents).")
            checkpoint = self.latest_checkpoint()
            where = f", last checkpoint at step {checkpoint.step}" if checkpoint else ", no checkpoint yet"
            raise ConfigError(f"{output} holds a {kind} run ({self.status()}{where}); pass --resume to continue "
                              "it, --force to replace it, or choose another --output.")
        return OutputPlan(replace=exists)

    def claim(self, plan: OutputPlan) -> None:
        """Carry out ``plan``: called only once the data, settings and model have been checked."""
        if plan.replace:
            shutil.rmtree(self.path)
        if plan.restart:
            # The files the stopped run wrote; the new run writes them again from step 0.
            for name in (ADAPTERS, METRICS):
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.path / CHECKPOINTS, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def base_model(self) -> BaseModelIdentity | None:
        """The base model the run recorded: the manifest's identity, else adapter_config.json's ``model``."""
        manifest = self.read_manifest()
        if manifest is not None and isinstance(manifest.get("base_model"), dict):
            return BaseModelIdentity.from_record(manifest["base_model"])
        config = self.read_adapter_config()
        model = config.get("model") if config else None
        return BaseModelIdentity(path=model) if isinstance(model, str) and model else None

    # ---- metrics.jsonl -------------------------------------------------------------------------
    def read_metrics(self, *, lenient: bool = False) -> list[dict[str, Any]]:
        return read_metrics_file(self.metrics_file, lenient=lenient)

    def write_metrics(self, metrics: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl whole (it is small), so it is never half-written."""
        fileio.write_text(self.metrics_file, "".join(json.dumps(m) + "\n" for m in metrics))

    # ---- adapter_config.json -------------------------------------------------------------------
    def read_adapter_config(self) -> dict[str, Any] | None:
        return read_adapter_config(self.path) if (self.path / ADAPTER_CONFIG).is_file() else None

    def write_adapter_config(self, payload: dict[str, Any]) -> None:
        fileio.write_json(self.path / ADAPTER_CONFIG, payload)

    # ---- checkpoints/ --------------------------------------------------------------------------
    def checkpoint_dir(self, step: int) -> Path:
        return self.path / CHECKPOINTS / f"step-{step:06d}"

    def complete_checkpoints(self) -> list[Path]:
        root = self.path / CHECKPOINTS
        return sorted(p for p in root.glob("step-*") if (p / STATE).is_file()) if root.is_dir() else []

    def latest_checkpoint(self) -> Checkpoint | None:
        complete = self.complete_checkpoints()
        if not complete:
            return None
        state = _json_file(complete[-1] / STATE)
        return Checkpoint(path=complete[-1], step=int(state["step"]), state=state)


def read_metrics_file(path: Path, *, lenient: bool = False) -> list[dict[str, Any]]:
    """The reports in a metrics.jsonl ([] when there is none).

    Strict by default (a resumed run must continue the exact record). ``lenient``
    skips lines that are not a JSON report with an ``iteration``, for display:
    a loss curve drawn from a hand-edited or foreign file just lacks those points.
    """
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if lenient:
                continue
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int | float):
            if lenient:
                continue
            raise DataError(f"{path}:{number}: expected a report with an 'iteration', got {line[:80]!r}.")
        records.append(record)
    return records


def loss_series(records: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(iteration, loss) points of the train and validation curves; NaN and missing values left out."""
    series: dict[str, list[tuple[float, float]]] = {"train_loss": [], "val_loss": []}
    for record in records:
        for key, points in series.items():
            value = record.get(key)
            if value is None and key == "train_loss":
                value = record.get("loss")  # a punie dpo run reports its training loss as "loss"
            if isinstance(value, int | float) and math.isfinite(value):
                points.append((float(record["iteration"]), float(value)))
    return series


def resume_settings(output: Path | None, kind: str) -> dict[str, Any]:
    """The settings ``--resume`` continues the run in ``output`` with (see :meth:`RunDir.settings_to_resume`)."""
    from punie.errors import ConfigError

    if output is None:
        raise ConfigError("--resume needs --output naming the run to continue.")
    return RunDir(output).settings_to_resume(kind)


def software_versions() -> dict[str, str | None]:
    """The installed versions a run's manifest records (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("punie", "mlx", "mlx-lm", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def training_process() -> dict[str, Any]:
    """This process, as the manifest records it while it trains."""
    from punie.serve import procinfo

    info = procinfo.read(os.getpid())
    return {"pid": os.getpid(), "start": info.start if info else None}


def training_process_alive(record: Any) -> bool:
    """Is the process a manifest names still running? Unknown (an older manifest) counts as gone."""
    from punie.serve import procinfo

    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return False
    return procinfo.is_running(record["pid"], record.get("start"))
