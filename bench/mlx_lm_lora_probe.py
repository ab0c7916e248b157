"""Run ``mlx_lm.lora`` exactly as its CLI does, recording its reports to a JSONL file.

Usage: python bench/mlx_lm_lora_probe.py REPORTS.jsonl [mlx_lm.lora arguments...]

mlx_lm.lora builds its reporting callback from ``--report-to``; this probe swaps
that factory for a recorder and then calls mlx_lm.lora's own ``main()``, so the
training path measured is the CLI's, unchanged.
"""

from __future__ import annotations

import json
import sys

import mlx_lm.lora as lora
from mlx_lm.tuner.callbacks import TrainingCallback


class Recorder(TrainingCallback):
    def __init__(self, path: str):
        self.path = path

    def _write(self, info: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(info) + "\n")

    def on_train_loss_report(self, train_info: dict) -> None:
        self._write(train_info)

    def on_val_loss_report(self, val_info: dict) -> None:
        self._write(val_info)


if __name__ == "__main__":
    reports = sys.argv[1]
    sys.argv = ["mlx_lm.lora", *sys.argv[2:]]
    lora.get_reporting_callbacks = lambda *args, **kwargs: Recorder(reports)
    lora.main()
