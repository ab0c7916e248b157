"""Benchmark: a task suite's agent episodes batched step by step vs one at a time, in one run.

The workload: every task of a task suite (default ``bench/tasks/workspace.jsonl``,
16 synthetic tasks over ``data/workspace``: run a script and quote it, read a
file, list, search, edit) run as an agent episode on the in-process engine,
greedy, on the base model or one ``--adapter``, each episode on a fresh copy of
its workspace.

* batched: ``punie eval --tasks``'s way: at each step, the next assistant turns
  of all unfinished episodes are generated in one batched generation
  (``InProcessEngine.agent_turns(batched=True)``);
* one at a time: the same episodes one after another, each turn generated alone
  with ``mlx_lm.stream_generate``, as ``punie agent run`` does.

Both use one loaded model and the same episode code (checks, tools, copies), so
the ratio is the batching's. Model loading and the reference commands are not
timed. The script also reports whether the two ways produced the same episodes
(greedy decoding: they should, up to floating-point differences of batched
kernels) and how many tasks each passed.

    PUNIE_HOME=/tmp/ph-bench python bench/episodes_batched.py --json bench/results/episodes.json
    python bench/episodes_batched.py --max-tokens 32            # a quicker run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from punie import blas

blas.ensure_fast_blas()

from punie.eval.engines import EngineOptions  # noqa: E402
from punie.eval.episodes import EpisodeResult, EpisodeSettings, run_task_episodes  # noqa: E402
from punie.eval.inprocess import InProcessEngine  # noqa: E402
from punie.eval.tasks import TaskSuite, load_tasks, reference_outputs  # noqa: E402

HERE = Path(__file__).resolve().parent


def run_mode(engine: InProcessEngine, suite: TaskSuite, outputs: dict[str, Any], *, adapter: Path | None,
             batched: bool, sandbox: str) -> tuple[float, list[EpisodeResult]]:
    found: dict[int, EpisodeResult] = {}
    tic = time.perf_counter()
    with engine.agent_turns(adapter, batched=batched) as turns:
        run_task_episodes(suite.tasks, turns, outputs=outputs, settings=EpisodeSettings(sandbox=sandbox),
                          on_episode=found.__setitem__)
    return time.perf_counter() - tic, [found[i] for i in range(len(suite.tasks))]


def describe(elapsed: float, episodes: list[EpisodeResult]) -> dict[str, Any]:
    tokens = sum(e.tokens or 0 for e in episodes)
    return {"wall_s": round(elapsed, 2), "passed": sum(e.passed for e in episodes),
            "turns": sum(e.steps for e in episodes), "tool_calls": sum(e.tool_calls for e in episodes),
            "generated_tokens": tokens,
            "tokens_per_s": round(tokens / elapsed, 2) if elapsed else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="base model directory (default: punie's default model)")
    parser.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter to run (default: the base)")
    parser.add_argument("--tasks", type=Path, default=HERE / "tasks" / "workspace.jsonl")
    parser.add_argument("--max-tokens", type=int, default=128, help="most tokens per assistant turn")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sandbox", default="auto", help="run_command's sandbox (auto, bwrap, none)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    from punie.models.registry import pull_default

    model = args.model or str(pull_default())
    suite = load_tasks(args.tasks)
    outputs = reference_outputs(suite, sandbox=args.sandbox)
    engine = InProcessEngine(EngineOptions(model=model, max_tokens=args.max_tokens, batch_size=args.batch_size))
    engine.prepare([args.adapter] if args.adapter else [])
    try:
        # Warm-up (first-call compilation and allocation) so neither timed way pays for it.
        engine.complete_each([([{"role": "user", "content": "hi"}], [])])
        batched_s, batched = run_mode(engine, suite, outputs, adapter=args.adapter, batched=True, sandbox=args.sandbox)
        alone_s, alone = run_mode(engine, suite, outputs, adapter=args.adapter, batched=False, sandbox=args.sandbox)
    finally:
        engine.close()
    same = {t.id: a.messages == b.messages for t, a, b in zip(suite.tasks, batched, alone, strict=True)}
    numbers = {"model": model, "adapter": str(args.adapter) if args.adapter else None, "tasks": str(args.tasks),
               "episodes": len(suite.tasks), "max_tokens": args.max_tokens,
               "batch_size": args.batch_size, "batched": describe(batched_s, batched),
               "one_at_a_time": describe(alone_s, alone), "speedup": round(alone_s / batched_s, 2),
               "identical_episodes": sum(same.values()), "differing_tasks": [k for k, v in same.items() if not v]}
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
