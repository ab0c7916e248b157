"""MLX on Linux with and without punie's BLAS fix, measured in one run.

    python bench/bench_blas.py

For each setting ("reference": MLX's bundled BLAS, PUNIE_NO_BLAS_FIX=1;
"openblas": punie's default), in fresh processes:
- fp32 matmul GFLOP/s as ``punie doctor`` measures it (1024x1024, best of 5);
- generation tokens/s of unmodified ``mlx_lm.generate`` on the default model
  (no adapter), with the environment punie gives its child processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from punie import blas
from punie.models import registry

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Write a short paragraph about the history of Paris."


def doctor(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-m", "punie", "doctor", "--json"], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout)


def generation(model: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", model, "--prompt", PROMPT,
                           "--max-tokens", "128", "--ignore-chat-template"], capture_output=True, text=True,
                          env=env, check=True)
    prompt = re.search(r"Prompt: (\d+) tokens, ([\d.]+) tokens-per-sec", done.stdout)
    gen = re.search(r"Generation: (\d+) tokens, ([\d.]+) tokens-per-sec", done.stdout)
    assert prompt and gen, done.stdout
    return {"prompt_tokens_per_second": float(prompt.group(2)), "generation_tokens": int(gen.group(1)),
            "generation_tokens_per_second": float(gen.group(2))}


def main() -> None:
    model = str(registry.pull_default())
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PUNIE_BLAS_REEXEC")}
    reference = base | {blas.OPT_OUT_ENV: "1"}
    fixed = blas.child_env(base)
    result = {}
    for name, env in (("reference", reference), ("openblas", fixed)):
        info = doctor(env if name == "reference" else base)
        result[name] = {"blas": info["blas"], "matmul_gflops": info["matmul_gflops"]} | generation(model, env)
    result["speedup"] = {k: result["openblas"][k] / result["reference"][k]
                         for k in ("matmul_gflops", "prompt_tokens_per_second", "generation_tokens_per_second")}
    out = ROOT / "bench" / "results" / "blas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
