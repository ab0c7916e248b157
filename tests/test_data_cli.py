"""The punie data commands as a user runs them."""

from __future__ import annotations

import json


def write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def qa(i):
    return {"prompt": f"Is {i} prime?", "completion": "Yes" if i % 3 == 0 else "No", "category": "ab"[i % 2]}


def test_split_then_check_clean_data(tmp_path, run_cli, tiny_model):
    write(tmp_path / "all.jsonl", [qa(i) for i in range(60)])
    data = tmp_path / "data"
    split = run_cli("data", "split", str(tmp_path / "all.jsonl"), "--out", str(data), "--stratify", "category")
    assert split.returncode == 0, split.stderr
    assert "train.jsonl: 48 records" in split.stdout
    check = run_cli("data", "check", str(data), "--model", str(tiny_model), "--max-label-ratio", "3")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no errors" in check.stdout
    summary = json.loads((data / "summary.json").read_text())
    assert summary["ok"] and summary["splits"]["train"]["tokens"]["count"] == 48
    assert "Data card" in (data / "data_card.html").read_text()


def test_check_exits_1_on_errors_and_lists_every_bad_line(tmp_path, run_cli):
    data = tmp_path / "data"
    write(data / "train.jsonl", [qa(i) for i in range(5)] + ["{broken", {"prompt": "q", "completion": " "}]
          + [qa(i) for i in range(5, 8)] + ["[]"])
    write(data / "valid.jsonl", [qa(100), qa(2)])
    result = run_cli("data", "check", str(data), "--no-tokenizer", "--out", str(tmp_path / "report"))
    assert result.returncode == 1
    assert "Error: 4 errors in" in result.stderr
    for where in ("train.jsonl:6: not valid JSON", "train.jsonl:7: 'completion' is empty",
                  "train.jsonl:11: a record must be a JSON object", "valid.jsonl:2: the same record as"):
        assert where in result.stdout, result.stdout
    assert (tmp_path / "report" / "summary.json").is_file()


def test_balance_and_import_commands(tmp_path, run_cli):
    data = tmp_path / "data"
    write(data / "train.jsonl", [qa(i) for i in range(30)])
    write(data / "valid.jsonl", [qa(100)])
    result = run_cli("data", "balance", str(data), "--field", "answer", "--method", "downsample")
    assert result.returncode == 0, result.stderr
    balanced = (tmp_path / "data-balanced" / "train.jsonl").read_text().splitlines()
    assert len(balanced) == 20  # 10 "Yes", 10 of the 20 "No"
    (tmp_path / "qa.csv").write_text("question,answer\nIs 2 even?,Yes\nIs 3 even?,No\n")
    result = run_cli("data", "import", str(tmp_path / "qa.csv"), "--out", str(tmp_path / "imp"), "--format",
                     "completions", "--map", "prompt=question", "--map", "completion=answer")
    assert result.returncode == 0, result.stderr
    assert "Next: punie data split" in result.stdout
    assert json.loads((tmp_path / "imp" / "all.jsonl").read_text().splitlines()[0]) == {
        "prompt": "Is 2 even?", "completion": "Yes"}
    bad = run_cli("data", "split", str(tmp_path / "qa.csv"), "--out", str(tmp_path / "s"), "--ratios", "0.5,0.4")
    assert bad.returncode == 1 and "sums to 0.9" in bad.stderr
