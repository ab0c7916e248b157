"""Benchmark: ``punie eval``'s in-process engine vs the naive way, in one run.

The workload: a 100-case suite (tool calls, arithmetic, yes/no), evaluated for
the baseline and one LoRA adapter, greedy, ``--max-tokens`` tokens at most.

* naive: start ``mlx_lm.server`` on the base model, send the cases one HTTP
  request at a time, stop it, start it again with ``--adapter-path``, repeat.
* punie: ``run_eval(engine="inprocess")``: the base loaded once, the adapter
  swapped in place, generation batched.

Both wall-clock totals include model loading (and server start-up for the
naive way). The adapter is a randomly initialised LoRA adapter in mlx-lm's
format (rank 8 on the last 8 layers, lora_b ~ N(0, 0.01²), seed 0), made here, so no
training is needed. The script also reports how many answers agree between the
two methods (both are greedy, so they should agree).

    PUNIE_HOME=/tmp/ph-bench python bench/bench_eval.py            # default model, 100 cases
    python bench/bench_eval.py --cases 10 --max-tokens 16           # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from punie import blas

blas.ensure_fast_blas()

import httpx  # noqa: E402

READ_FILE = {"type": "function", "function": {"name": "read_file", "description": "Read a text file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
SEARCH = {"type": "function", "function": {"name": "search_code", "description": "Search the code base.",
                                           "parameters": {"type": "object", "properties": {
                                               "query": {"type": "string"}}, "required": ["query"]}}}
FILES = ["setup.cfg", "README.md", "pyproject.toml", "src/app.py", "Makefile", "tests/test_app.py", "docs/index.md"]
TERMS = ["TODO", "def main", "import os", "class Config", "logging", "timeout", "retry"]


def make_suite(path: Path, n: int) -> Path:
    """``n`` deterministic cases: 50% tool calls, 25% arithmetic, 25% yes/no."""
    lines = []
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):
            if kind == 0:
                name, arg, value, ask = "read_file", "path", FILES[i % len(FILES)], "Show me what is in {}"
            else:
                name, arg, value, ask = "search_code", "query", TERMS[i % len(TERMS)], "Find where the code uses {}"
            lines.append({"id": f"tool-{i:03d}", "category": "tools", "tools": [READ_FILE, SEARCH],
                          "messages": [{"role": "user", "content": ask.format(value)}], "scorer": "tool_call",
                          "expect": {"tool_calls": [{"name": name, "arguments": {arg: value}}]}})
        elif kind == 2:
            a, b = 3 + i, 7 + 2 * i
            lines.append({"id": f"math-{i:03d}", "category": "math", "scorer": "numeric",
                          "messages": [{"role": "user", "content": f"What is {a} + {b}? Reply with the number."}],
                          "expect": {"answer": str(a + b)}})
        else:
            a, b = i, i + (1 if i % 8 == 3 else -1)
            lines.append({"id": f"yn-{i:03d}", "category": "yes_no", "scorer": "yes_no",
                          "messages": [{"role": "user", "content": f"Is {a} greater than {b}? Answer yes or no."}],
                          "expect": {"answer": "yes" if a > b else "no"}})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def make_random_adapter(base: str, out: Path, *, rank: int = 8, layers: int = 8, std: float = 0.01) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(base)
    model.freeze()
    config = {"rank": rank, "scale": 20.0, "dropout": 0.0}
    mx.random.seed(0)  # lora_a is drawn inside linear_to_lora_layers: seed first, for the same adapter every run
    linear_to_lora_layers(model, layers, config)
    params = {k: (mx.random.normal(v.shape) * std if k.endswith("lora_b") else v)
              for k, v in tree_flatten(model.trainable_parameters())}
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), params)
    (out / "adapter_config.json").write_text(json.dumps({"model": base, "fine_tune_type": "lora", "num_layers": layers,
                                                         "lora_parameters": config}))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def naive_run(base: str, adapter: Path | None, cases: list[dict[str, Any]], max_tokens: int,
              log: Path) -> tuple[list[str], float]:
    """Start mlx_lm.server, ask every case one request at a time, stop it; (answers, seconds)."""
    tic = time.perf_counter()
    port = _free_port()
    cmd = [sys.executable, "-m", "mlx_lm.server", "--model", base, "--host", "127.0.0.1", "--port", str(port)]
    if adapter:
        cmd += ["--adapter-path", str(adapter)]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=blas.child_env())
    url = f"http://127.0.0.1:{port}"
    from punie.chat.toolcalls import parse_call

    answers = []
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlx_lm.server did not start; see {log}")
            time.sleep(0.1)
        with httpx.Client(timeout=600) as client:
            for case in cases:
                body = {"messages": case["messages"], "max_tokens": max_tokens, "temperature": 0.0}
                if case.get("tools"):
                    body["tools"] = case["tools"]
                message = client.post(f"{url}/v1/chat/completions", json=body).json()["choices"][0]["message"]
                calls = [parse_call(c).as_dict() for c in message.get("tool_calls") or []]
                answers.append(json.dumps([(message.get("content") or "").strip(), calls], sort_keys=True))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return answers, time.perf_counter() - tic


def _punie_answers(run: Any) -> list[str]:
    from punie.chat.toolcalls import parse_text

    out = []
    for case in run.cases:
        parsed = parse_text(case.output)
        calls = [c.as_dict() for c in parsed.tool_calls]
        out.append(json.dumps([parsed.content.strip(), calls], sort_keys=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model (default: punie's default model)")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    from punie.eval import run_eval
    from punie.models.registry import resolve_model

    base = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    suite = make_suite(work / "suite.jsonl", args.cases)
    adapter = make_random_adapter(base, work / "random-lora")
    cases = [json.loads(line) for line in suite.read_text().splitlines()]

    naive_base, t_base = naive_run(base, None, cases, args.max_tokens, work / "server.log")
    naive_adapter, t_adapter = naive_run(base, adapter, cases, args.max_tokens, work / "server.log")
    naive_s = t_base + t_adapter

    tic = time.perf_counter()
    results = run_eval(suite, model=base, adapters=[adapter], max_tokens=args.max_tokens, out_dir=work / "out",
                       batch_size=args.batch_size)
    punie_s = time.perf_counter() - tic

    agree = [sum(a == b for a, b in zip(naive, _punie_answers(run), strict=True))
             for naive, run in zip((naive_base, naive_adapter), results.runs, strict=True)]
    numbers = {"model": base, "cases": args.cases, "max_tokens": args.max_tokens, "batch_size": args.batch_size,
               "naive_s": round(naive_s, 1), "naive_baseline_s": round(t_base, 1),
               "naive_adapter_s": round(t_adapter, 1), "punie_inprocess_s": round(punie_s, 1),
               "speedup": round(naive_s / punie_s, 2), "answers_agreeing": {"baseline": agree[0], "adapter": agree[1]},
               "accuracy": {r.name: r.summary(results.cases)["accuracy"] for r in results.runs},
               "work_dir": str(work)}
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
