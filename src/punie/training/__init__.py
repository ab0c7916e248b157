"""``punie.train(config) -> TrainResult``: LoRA/DoRA/full fine-tuning on local data.

Modules: ``config`` (settings), ``data`` (tokenize and batch), ``losses``,
``loop`` (the compiled step and the loop), ``checkpoints`` (tensor files),
``rundir`` (the run directory's layout, manifest and metrics), ``run`` (the
``train`` orchestrator), ``distributed`` (data-parallel ranks on
``mx.distributed``), ``launcher`` (starting them through ``mlx.launch``).
"""

from __future__ import annotations

from punie.training.config import TrainConfig, resolve_config
from punie.training.loop import TrainingError, TrainingInterrupted
from punie.training.run import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "TrainingInterrupted", "resolve_config", "train"]
