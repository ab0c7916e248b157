"""Training throughput: punie train vs plain mlx_lm.lora, side by side in one run.

    python bench/bench_train.py [--iters 40] [--oob-iters 6] [--data data/agent]

Three runs on the same model (the embedded default), data and settings
(LoRA rank 8, scale 20, 8 layers, batch 4, lr 2e-4, prompt masked):

1. ``mlx_lm.lora`` with OpenBLAS preloaded (the same BLAS punie uses);
2. ``punie train`` as a user runs it;
3. ``mlx_lm.lora`` out of the box (on Linux: MLX's bundled reference BLAS),
   for fewer iterations because it is much slower; tokens/s is a rate.

Reported: target tokens/s over the whole run and in steady state (after the
first report window, which includes compilation), peak memory, the ratios, and
punie's achieved FLOP/s as a share of the matmul peak ``punie doctor`` measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from punie import blas
from punie.models import registry

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"batch_size": 4, "num_layers": 8, "learning_rate": 2e-4}


def mlx_lm_lora(model: str, data: Path, iters: int, work: Path, env: dict[str, str]) -> list[dict]:
    reports = work / "reports.jsonl"
    cmd = [sys.executable, str(ROOT / "bench" / "mlx_lm_lora_probe.py"), str(reports), "--train", "--model", model,
           "--data", str(data), "--iters", str(iters), "--batch-size", str(SETTINGS["batch_size"]),
           "--num-layers", str(SETTINGS["num_layers"]), "--learning-rate", str(SETTINGS["learning_rate"]),
           "--mask-prompt", "--steps-per-report", "5", "--steps-per-eval", "100000", "--val-batches", "1",
           "--save-every", "100000", "--adapter-path", str(work / "adapter")]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in reports.read_text().splitlines()]


def punie_train(model: str, data: Path, iters: int, work: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PUNIE_BLAS_REEXEC")}
    cmd = [sys.executable, "-m", "punie", "train", str(data), "--model", model, "--output", str(work / "adapter"),
           "--iters", str(iters), "--batch-size", str(SETTINGS["batch_size"]), "--num-layers",
           str(SETTINGS["num_layers"]), "--learning-rate", str(SETTINGS["learning_rate"]), "--mask-prompt",
           "--steps-per-report", "5", "--steps-per-eval", "100000", "--val-batches", "1", "--save-every", "100000"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads(line) for line in (work / "adapter" / "metrics.jsonl").read_text().splitlines()]


def windows_mlx_lm(reports: list[dict]) -> list[tuple[int, float]]:
    """(target tokens, seconds) per report window of mlx_lm.lora."""
    out, previous = [], 0
    for r in (r for r in reports if "tokens_per_second" in r):
        tokens = r["trained_tokens"] - previous
        previous = r["trained_tokens"]
        out.append((tokens, tokens / r["tokens_per_second"]))
    return out


def windows_punie(metrics: list[dict]) -> list[tuple[int, float]]:
    """(target tokens, seconds) per report window of punie (its reports are cumulative)."""
    out, prev_tokens, prev_time = [], 0, 0.0
    for m in (m for m in metrics if "tokens_per_second" in m):
        seconds = m["trained_tokens"] / m["tokens_per_second"]
        out.append((m["trained_tokens"] - prev_tokens, seconds - prev_time))
        prev_tokens, prev_time = m["trained_tokens"], seconds
    return out


def rates(windows: list[tuple[int, float]]) -> dict[str, float]:
    total = sum(t for t, _ in windows) / sum(s for _, s in windows)
    steady = windows[1:] or windows
    steady_rate = sum(t for t, _ in steady) / sum(s for _, s in steady)
    return {"tokens_per_second": total, "steady_tokens_per_second": steady_rate}


def flops_per_token(model_dir: str, num_layers: int, seq_len: float) -> float:
    """Approximate training FLOPs per processed token for LoRA on a llama.

    Forward: 2 x (every block's matmul weights + the LM head) plus attention scores.
    Backward: activation gradients flow only through the adapted top blocks and the
    LM head (2 x their weights, plus attention); LoRA's own weights add ~1%.
    """
    c = json.loads((Path(model_dir) / "config.json").read_text())
    d, f, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    head_dim = c.get("head_dim") or d // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    block = d * d * 2 + d * kv * 2 + 3 * d * f
    attention = 2 * 2 * seq_len * d  # QK^T and AV per token, per layer
    head = d * c["vocab_size"]
    forward = 2 * (layers * block + head) + layers * attention
    backward = 2 * (num_layers * block + head) + num_layers * attention
    return forward + backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--oob-iters", type=int, default=6)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "agent")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.json")
    args = parser.parse_args()
    model = str(registry.pull_default())
    fast_env = blas.child_env()
    slow_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("mlx_fast", "punie", "mlx_oob"):
            (work / name).mkdir()
        mlx_fast = mlx_lm_lora(model, args.data, args.iters, work / "mlx_fast", fast_env)
        punie_metrics = punie_train(model, args.data, args.iters, work / "punie")
        mlx_oob = mlx_lm_lora(model, args.data, args.oob_iters, work / "mlx_oob", slow_env)
    doctor = json.loads(subprocess.run([sys.executable, "-m", "punie", "doctor", "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    punie_reports = [m for m in punie_metrics if "tokens_per_second" in m]
    result = {
        "settings": SETTINGS | {"iters": args.iters, "oob_iters": args.oob_iters, "data": str(args.data)},
        "mlx_lm_lora_openblas": rates(windows_mlx_lm(mlx_fast)) | {
            "peak_memory_gb": max(r["peak_memory"] for r in mlx_fast if "peak_memory" in r)},
        "punie_train": rates(windows_punie(punie_metrics)) | {
            "peak_memory_gb": max(m["peak_memory_gb"] for m in punie_reports)},
        "mlx_lm_lora_out_of_the_box": rates(windows_mlx_lm(mlx_oob)) | {
            "peak_memory_gb": max(r["peak_memory"] for r in mlx_oob if "peak_memory" in r)},
        "matmul_gflops": doctor["matmul_gflops"],
        "blas": doctor["blas"],
    }
    p, fast, oob = result["punie_train"], result["mlx_lm_lora_openblas"], result["mlx_lm_lora_out_of_the_box"]
    last = punie_reports[-1]
    seq_len = last["processed_tokens_per_second"] / last["iterations_per_second"] / SETTINGS["batch_size"]
    achieved = last["processed_tokens_per_second"] * flops_per_token(model, SETTINGS["num_layers"], seq_len) / 1e9
    result["ratios"] = {
        "punie_vs_mlx_lm_same_blas": p["tokens_per_second"] / fast["tokens_per_second"],
        "punie_vs_mlx_lm_same_blas_steady": p["steady_tokens_per_second"] / fast["steady_tokens_per_second"],
        "punie_peak_memory_vs_mlx_lm": p["peak_memory_gb"] / fast["peak_memory_gb"],
        "punie_vs_mlx_lm_out_of_the_box": p["tokens_per_second"] / oob["tokens_per_second"],
    }
    result["punie_achieved_gflops"] = achieved
    result["punie_share_of_matmul_peak"] = achieved / doctor["matmul_gflops"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
