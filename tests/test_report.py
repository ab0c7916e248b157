"""The eval report: escaping, self-containment, loss curves, and a real render in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from punie import fileio
from punie.eval.results import CaseResult, EvalResults, RunResult
from punie.eval.suite import EvalCase
from punie.report.eval_report import loss_svg, read_metrics, write_report

REPO = Path(__file__).resolve().parents[1]
XSS = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def _case(i: int, category: str) -> EvalCase:
    return EvalCase(id=f"case-{i}", messages=[{"role": "user", "content": f"question {i} <b>bold?</b>"}],
                    scorer="tool_call", expect={"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]},
                    category=category, tools=[{"type": "function", "function": {"name": "read_file"}}])


def _result(case: EvalCase, passed: bool, output: str) -> CaseResult:
    calls = [{"name": "read_file", "arguments": {"path": "a"}}] if passed else []
    return CaseResult(id=case.id, category=case.category, scorer=case.scorer, passed=passed, score=float(passed),
                      output=output, tool_calls=calls, latency_s=0.25,
                      reason="" if passed else "no tool call; expected ['read_file']",
                      details={"names_right": passed})


@pytest.fixture
def eval_dir(tmp_path) -> Path:
    """An eval output folder with a baseline, one adapter (with metrics.jsonl), and an XSS attempt."""
    adapter = tmp_path / "adapters" / "tools-v1"
    adapter.mkdir(parents=True)
    lines = [{"iteration": i, "train_loss": 2.0 / (1 + i / 10)} for i in range(0, 101, 10)]
    lines += [{"iteration": i, "val_loss": 2.2 / (1 + i / 12)} for i in range(0, 101, 25)]
    (adapter / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"iteration\": 1")
    cases = [_case(i, "files" if i < 3 else "chat") for i in range(4)]
    call = '<tool_call>\n{"name": "read_file", "arguments": {"path": "a"}}\n</tool_call>'
    base = RunResult("baseline", None, [_result(cases[0], False, XSS), _result(cases[1], True, call),
                                        _result(cases[2], False, "no idea"), _result(cases[3], False, "hm")],
                     complete=True)
    tuned = RunResult("tools-v1", str(adapter), [_result(c, True, call) for c in cases[:3]]
                      + [_result(cases[3], False, "still no")], complete=True,
                      metrics_path=str(adapter / "metrics.jsonl"))
    results = EvalResults(suite_path=str(tmp_path / "suite.jsonl"), suite_sha256="0" * 64, model="default",
                          engine="inprocess", max_tokens=64, cases=cases, runs=[base, tuned],
                          created="2025-01-01T00:00:00+00:00")
    out = tmp_path / "out"
    results.write(out)
    write_report(out)
    return out


def test_model_output_is_escaped(eval_dir):
    html = (eval_dir / "report.html").read_text()
    assert "document.title='pwned'" in html.replace("&#39;", "'")  # the output is shown ...
    assert "<script>document.title" not in html  # ... as text, never as markup
    assert "&lt;script&gt;document.title" in html
    assert "<img src=x" not in html
    assert "<b>bold?</b>" not in html and "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert html.count("<script") == 1  # only the report's own filter script


def test_report_is_self_contained(eval_dir):
    html = (eval_dir / "report.html").read_text()
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert "@import" not in html and "url(" not in html
    assert "<link" not in html


def test_report_shows_cards_categories_cases_and_curves(eval_dir):
    html = (eval_dir / "report.html").read_text()
    assert "25.0%" in html and "75.0%" in html  # accuracy per run
    assert "+50.0 pp" in html and "no significant difference" in html  # 2 changed cases are not significant
    assert 'id="only-failed"' in html and 'id="only-changed"' in html
    assert html.count('class="case"') == 4
    assert html.count('data-changed="1"') == 2
    assert "no tool call; expected [&#39;read_file&#39;]" in html  # why a case failed
    assert "{&#34;name&#34;: &#34;read_file&#34;" in html  # the parsed tool calls
    assert '<polyline class="train_loss"' in html and '<polyline class="val_loss"' in html


def _timed_results(tmp_path: Path, *, timing: str | None, latency: float | None, tokens: int | None) -> Path:
    """An eval folder with one run of four cases that took 22 s in all, written as ``timing`` says."""
    cases = [_case(i, "files") for i in range(4)]
    run = RunResult("baseline", None, [_result(c, True, "x") for c in cases], complete=True, elapsed_s=22.0)
    for case in run.cases:
        case.latency_s, case.generated_tokens = latency, tokens
    results = EvalResults(suite_path=str(tmp_path / "suite.jsonl"), suite_sha256="0" * 64, model="default",
                          engine="inprocess" if timing != "per_case" else "server", max_tokens=64, cases=cases,
                          runs=[run], timing=timing or "batched", batch_size=16 if timing == "batched" else None)
    data = results.to_dict()
    if timing is None:
        del data["timing"], data["batch_size"]  # a results.json written before the field existed
    out = tmp_path / "out"
    fileio.write_json(out / "results.json", data)
    write_report(out)
    return out / "report.html"


def test_batched_report_shows_run_time_and_throughput_not_case_latency(tmp_path):
    html = _timed_results(tmp_path, timing="batched", latency=None, tokens=11).read_text()
    assert "run 22.0 s for 4 cases, batched 16 at a time, 2.0 generated tokens/s" in html
    assert "11 tokens" in html
    assert not re.search(r"\d s per case|\d\.\d\d s<", html)


def test_old_inprocess_results_do_not_show_batch_time_as_case_latency(tmp_path):
    """The demo report said 22 s per case: the in-process engine stored its batch's wall time for each case."""
    html = _timed_results(tmp_path, timing=None, latency=22.0, tokens=None).read_text()
    assert "22.00 s" not in html and "per case" not in html
    assert "run 22.0 s for 4 cases" in html


def test_per_case_report_shows_each_latency(tmp_path):
    html = _timed_results(tmp_path, timing="per_case", latency=0.25, tokens=None).read_text()
    assert "0.25 s per case (mean), run 22.0 s for 4 cases" in html
    assert html.count(">0.25 s</span>") == 4 and "tokens/s" not in html


def test_read_metrics_and_svg_geometry(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 10, "train_loss": 1.2}\n{"iteration": 10, "val_loss": 1.3}\nnot json\n'
                    '{"iteration": 20, "train_loss": 0.8}\n{"iteration": 30, "val_loss": NaN}\n')
    series = read_metrics(path)
    assert series == {"train_loss": [(10.0, 1.2), (20.0, 0.8)], "val_loss": [(10.0, 1.3)]}
    svg = loss_svg(series, width=200, height=100)
    xs = [float(p.split(",")[0]) for line in svg["lines"] for p in line["points"].split()]
    ys = [float(p.split(",")[1]) for line in svg["lines"] for p in line["points"].split()]
    assert min(xs) >= svg["left"] and max(xs) <= svg["right"]
    assert min(ys) >= svg["top"] and max(ys) <= svg["bottom"]
    train = svg["lines"][0]["points"].split()
    assert float(train[1].split(",")[1]) > float(train[0].split(",")[1])  # lower loss is drawn lower


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "headless Chromium is needed to test the HTML report; install it with 'apt-get install -y chromium'"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _run_chromium(page: Path, tmp_path: Path, *extra: str, url_suffix: str = "") -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri() + url_suffix]
    # The test process preloads OpenBLAS for MLX; Chromium's GPU process crashes with it preloaded.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _png_has_content(path: Path) -> bool:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return len(set(pixels[::101])) > 20  # a blank page has a handful of distinct bytes


def test_report_renders_in_chromium_without_console_errors(eval_dir, tmp_path):
    # The console check must be able to fail: a page with an error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); missingFunction();</script></body></html>")
    control = _run_chromium(bad, tmp_path, "--dump-dom")
    assert any("missingFunction" in m for m in _console_messages(control.stderr)), control.stderr[-3000:]

    page = eval_dir / "report.html"
    dumped = _run_chromium(page, tmp_path, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert _console_messages(dumped.stderr) == []
    assert "4 of 4 cases shown" in dumped.stdout  # the filter script ran
    for hash_, shown in (("#failures", 3), ("#changed", 2), ("#failures,changed", 2)):
        filtered = _run_chromium(page, tmp_path, "--dump-dom", url_suffix=hash_)
        assert f"{shown} of 4 cases shown" in filtered.stdout
        assert filtered.stdout.count('class="case hidden"') == 4 - shown
    assert "document.title='pwned'" not in dumped.stdout.split("<title>")[1].split("</title>")[0]

    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report.png"
    if shot.exists():
        shot.unlink()
    taken = _run_chromium(page, tmp_path, "--window-size=1280,1600", f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert _console_messages(taken.stderr) == []
    assert shot.is_file() and _png_has_content(shot)


def test_report_open_and_build(eval_dir, run_cli, monkeypatch):
    (eval_dir / "report.html").unlink()
    built = run_cli("report", "build", str(eval_dir))
    assert built.returncode == 0, built.stderr
    assert (eval_dir / "report.html").is_file()
    monkeypatch.setenv("BROWSER", "echo")
    opened = run_cli("report", "open", str(eval_dir))
    assert opened.returncode == 0, opened.stderr
    assert (eval_dir / "report.html").resolve().as_uri() in opened.stdout
    missing = run_cli("report", "open", str(eval_dir.parent / "nowhere"))
    assert missing.returncode == 1 and "has no results.json" in missing.stderr
