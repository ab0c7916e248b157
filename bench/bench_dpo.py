"""A DPO step: punie dpo vs mlx-lm-lora's DPO, side by side in one run.

    python bench/bench_dpo.py [--reps 3] [--warmup 2] [--steps 6] [--pairs 32]

Both sides train the same model (the embedded default, float32) on the same
preference pairs with the same settings: LoRA rank 8, scale 20, top 8 layers,
batch 4, Adam lr 5e-5, sigmoid loss, beta 0.1, max sequence length 2048, one
validation batch. The pairs are agent pairs built from ``data/agent`` (system
prompt with the tool list, a user request; chosen = the example's reply, a tool
call or an answer; rejected = the reply of an example of another category),
written in punie's preference format and converted for mlx-lm-lora, which reads
only text (``system``, ``prompt``, ``chosen``, ``rejected``): the tool list and the
tool calls become the text the chat template renders for them, and
``dpo_sides.py check`` verifies that both tools then see the same token ids.

Each side runs in fresh processes (``dpo_sides.py``), alternately
(mlx-lm-lora, punie, mlx-lm-lora, punie, ...), so one side's allocations do not
pollute the other's peak memory and slow drifts of the machine hit both.
Reported per side: seconds per trained pair in steady state (after ``--warmup``
steps, over ``--steps`` steps, from each tool's own step timer), punie's one-time
reference pass (amortised over the pairs the run trains, and also per pair
scored), MLX peak memory and process max RSS; then the ratios punie/mlx-lm-lora
per repetition (median, min, max) and the first-batch losses (log 2 = 0.693 when
policy == reference).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from punie import blas
from punie.models import registry

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("mlx-lm-lora", "punie")
# Shared by both sides (dpo_sides.py maps them onto each tool's own settings).
SETTINGS: dict[str, Any] = {"batch_size": 4, "num_layers": 8, "rank": 8, "scale": 20.0, "learning_rate": 5e-5,
                            "beta": 0.1, "loss": "sigmoid", "max_seq_length": 2048, "seed": 0, "val_batches": 1}
SENTINEL = "\x00"


# ---- the pairs -----------------------------------------------------------------------------------
def agent_pairs(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` preference pairs in punie's format from first-turn examples (system, user, assistant).

    Examples are taken evenly over the file; each pair's rejected reply is the reply
    of the next chosen example of another category.
    """
    first = [r for r in records if len(r["messages"]) == 3 and r["messages"][0]["role"] == "system"]
    if len(first) < n:
        raise ValueError(f"only {len(first)} first-turn examples, {n} pairs asked")
    picked = first[::len(first) // n][:n]
    pairs = []
    for i, record in enumerate(picked):
        other = next(picked[(i + k) % n] for k in range(1, n)
                     if picked[(i + k) % n].get("category") != record.get("category"))
        pairs.append({"messages": record["messages"][:2], "tools": record.get("tools"),
                      "chosen": record["messages"][2], "rejected": other["messages"][2],
                      "category": record.get("category")})
    return pairs


def _inner(rendered: str, wrapper: str) -> str:
    """What ``rendered`` holds where ``wrapper`` (a rendering of the sentinel) holds the sentinel."""
    head, _, tail = wrapper.partition(SENTINEL)
    if not (rendered.startswith(head) and rendered.endswith(tail)) or len(rendered) < len(head) + len(tail):
        raise ValueError(f"the chat template does not wrap {rendered!r} as it wraps the sentinel ({wrapper!r})")
    return rendered[len(head):len(rendered) - len(tail)]


def to_mlx_lm_lora(pair: dict[str, Any], tokenizer: Any) -> dict[str, str]:
    """A punie preference pair as mlx-lm-lora's DPO record (text only), rendering to the same tokens.

    mlx-lm-lora's DPODataset knows one optional system turn, one user turn and text
    replies; tools and tool calls are therefore given as the text the chat template
    renders for them. ValueError for a conversation that shape cannot express.
    """
    from punie.chat.template import render
    from punie.data.formats import preference_turns

    messages, chosen, rejected = preference_turns(pair)
    roles = [m["role"] for m in messages]
    if roles not in (["user"], ["system", "user"]):
        raise ValueError(f"mlx-lm-lora's DPO takes [system,] user prompts; this pair's turns are {roles}")
    tools = pair.get("tools") or None
    out: dict[str, str] = {}
    if roles[0] == "system":
        system = render(tokenizer, messages[:1], tools)
        out["system"] = _inner(system, render(tokenizer, [{"role": "system", "content": SENTINEL}]))
    elif tools:
        raise ValueError("a pair with tools needs a system turn to carry them as text")
    out["prompt"] = messages[-1]["content"]
    prompt = render(tokenizer, messages, tools, add_generation_prompt=True)
    sentinel_reply = render(tokenizer, messages + [{"role": "assistant", "content": SENTINEL}], tools)
    for side, reply in (("chosen", chosen), ("rejected", rejected)):
        full = render(tokenizer, messages + [reply], tools)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
        out[side] = _inner(full[len(prompt):], sentinel_reply[len(prompt):])
    return out


def write_pairs(out: Path, data: Path, tokenizer: Any, n_train: int, n_valid: int) -> tuple[Path, Path]:
    """Directories ``out/punie`` and ``out/mlx-lm-lora`` with the same train/valid pairs in each format."""
    records = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines() if line.strip()]
    pairs = agent_pairs(records, n_train + n_valid)
    splits = {"train": pairs[:n_train], "valid": pairs[n_train:]}
    dirs = out / "punie", out / "mlx-lm-lora"
    for d in dirs:
        d.mkdir(parents=True)
    for name, split in splits.items():
        (dirs[0] / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in split))
        (dirs[1] / f"{name}.jsonl").write_text("".join(json.dumps(to_mlx_lm_lora(p, tokenizer)) + "\n"
                                                       for p in split))
    return dirs


# ---- running the sides ---------------------------------------------------------------------------
def run_side(side: str, job: dict[str, Any], work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One fresh process of ``dpo_sides.py``; its JSON result plus its wall time and max RSS (wait4)."""
    out = work / f"{side}-{job['tag']}.json"
    job_file = out.with_suffix(".job.json")
    job_file.write_text(json.dumps(job | {"result": str(out)}))
    log = out.with_suffix(".log")
    env = env | {"PUNIE_HOME": str(work / f"home-{side}-{job['tag']}")}  # an empty reference cache every run
    tic = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "dpo_sides.py"), side, str(job_file)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["process_seconds"] = time.perf_counter() - tic
    result["max_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # Linux reports KiB
    return result


def steady(steps: list[dict[str, float]], warmup: int) -> dict[str, float]:
    """Seconds per pair over the steps after ``warmup``: from the tool's timer and from the wall clock."""
    kept = steps[warmup:]
    pairs = sum(s["pairs"] for s in kept)
    per_pair = [s["seconds"] / s["pairs"] for s in kept]
    return {"seconds_per_pair": sum(s["seconds"] for s in kept) / pairs,
            "median_step_seconds_per_pair": statistics.median(per_pair),
            "wall_seconds_per_pair": sum(s["wall_seconds"] for s in kept) / pairs, "steps": len(kept)}


def summarise(side: str, r: dict[str, Any], warmup: int) -> dict[str, Any]:
    s = steady(r["steps"], warmup) | {"peak_memory_gb": r["peak_memory_gb"], "max_rss_gb": r["max_rss_gb"],
                                      "process_seconds": r["process_seconds"], "first_loss": r["first_loss"],
                                      "first_val_loss": r["first_val_loss"]}
    if side == "punie":
        ref = r["reference"]
        ref_seconds = sum(x["seconds"] for x in ref)
        trained = sum(step["pairs"] for step in r["steps"])
        s |= {"reference_seconds": ref_seconds, "reference_pairs": sum(x["pairs"] for x in ref),
              "reference_seconds_per_scored_pair": ref_seconds / sum(x["pairs"] for x in ref),
              "trained_pairs": trained,
              "seconds_per_pair_with_reference": s["seconds_per_pair"] + ref_seconds / trained}
    return s


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(reps: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """punie / mlx-lm-lora per repetition (each punie run against the mlx-lm-lora run just before it)."""
    pairs = [(r["punie"], r["mlx-lm-lora"]) for r in reps]
    return {
        "time_per_pair_with_reference": spread([p["seconds_per_pair_with_reference"] / m["seconds_per_pair"]
                                                for p, m in pairs]),
        "time_per_pair_steps_only": spread([p["seconds_per_pair"] / m["seconds_per_pair"] for p, m in pairs]),
        "time_per_pair_wall_clock_steps": spread([p["wall_seconds_per_pair"] / m["wall_seconds_per_pair"]
                                                  for p, m in pairs]),
        "peak_memory": spread([p["peak_memory_gb"] / m["peak_memory_gb"] for p, m in pairs]),
        "max_rss": spread([p["max_rss_gb"] / m["max_rss_gb"] for p, m in pairs]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of (mlx-lm-lora, punie)")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the steady-state time")
    # The defaults train one epoch (32 pairs, 8 steps of 4): every pair once, the least favourable run
    # for punie's one-time reference pass, which longer runs amortise over more trained pairs.
    parser.add_argument("--steps", type=int, default=6, help="steps timed after the warm-up")
    parser.add_argument("--pairs", type=int, default=32, help="training pairs (validation: one batch more)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "agent")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dpo.json")
    args = parser.parse_args()
    from punie.models.loading import load_tokenizer

    model = str(registry.pull_default())
    env = blas.child_env()  # both sides get OpenBLAS, the BLAS punie gives its own processes
    iters = args.warmup + args.steps
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        work = Path(tmp)
        punie_data, lora_data = write_pairs(work / "data", args.data, load_tokenizer(model), args.pairs,
                                            SETTINGS["batch_size"])
        job = {"model": model, "punie_data": str(punie_data), "mlx_lm_lora_data": str(lora_data),
               "settings": SETTINGS, "iters": iters, "work": str(work)}
        check = run_side("check", job | {"tag": "check"}, work, env)
        raw: list[dict[str, Any]] = []
        for rep in range(args.reps):
            raw.append({side: run_side(side, job | {"tag": f"rep{rep}"}, work, env) for side in SIDES})
    load_after = os.getloadavg()
    reps = [{side: summarise(side, r[side], args.warmup) for side in SIDES} for r in raw]
    result = {"settings": SETTINGS | {"pairs": args.pairs, "warmup": args.warmup, "steps": args.steps,
                                      "reps": args.reps, "data": str(args.data), "model": model,
                                      "epochs": iters * SETTINGS["batch_size"] / args.pairs},
              "load_average_before": load_before, "load_average_after": load_after,
              "check": check, "reps": reps, "ratios": ratios(reps),
              "per_step_seconds": [{side: [s["seconds"] for s in r[side]["steps"]] for side in SIDES} for r in raw],
              "log_2": math.log(2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
