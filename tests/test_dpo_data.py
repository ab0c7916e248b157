"""punie data check on preference pairs: chosen-side balance, identical sides, chosen tool-call round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from punie.data.check import check_data_dir

TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def call(path: str) -> dict:
    return {"type": "function", "function": {"name": "read_file", "arguments": {"path": path}}}


def tool_or_text_pair(i: int) -> dict:
    """Chosen: a read_file call for even i, a text reply for odd i (the rejected side is the opposite)."""
    text = {"role": "assistant", "content": f"I will not open {i}.txt."}
    tool = {"role": "assistant", "content": "", "tool_calls": [call(f"{i}.txt")]}
    chosen, rejected = (tool, text) if i % 2 == 0 else (text, tool)
    return {"messages": [{"role": "user", "content": f"Open {i}.txt"}], "tools": TOOLS,
            "chosen": chosen, "rejected": rejected}


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def pair_dir(root: Path, train: list[dict], valid: list[dict]) -> Path:
    root.mkdir(parents=True)
    write(root / "train.jsonl", train)
    write(root / "valid.jsonl", valid)
    return root


def test_balance_is_counted_on_the_chosen_side(tmp_path):
    yes_no = [{"prompt": f"Is {i} even?", "chosen": "Yes" if i % 4 else "No", "rejected": "No" if i % 4 else "Yes"}
              for i in range(12)]
    data = pair_dir(tmp_path / "d", [tool_or_text_pair(i) for i in range(12)], yes_no)
    report = check_data_dir(data, splits=("train", "valid"))
    assert report.ok and report.format == "preference"
    assert report.splits["train"].labels["tool"] == {"read_file": 6, "(text reply)": 6}
    assert report.splits["valid"].labels["answer"] == {"yes": 9, "no": 3}
    assert any(f.code == "imbalance" and "answer" in f.message and f.file.endswith("valid.jsonl")
               for f in report.warnings)


def test_identical_sides_are_refused_with_their_line(tmp_path):
    same = {"prompt": "Hi", "chosen": {"role": "assistant", "content": "Hello"}, "rejected": " Hello "}
    data = pair_dir(tmp_path / "d", [tool_or_text_pair(i) for i in range(3)] + [same], [tool_or_text_pair(9)])
    errors = [(Path(f.file).name, f.line) for f in check_data_dir(data).errors if f.code == "identical-pair"]
    assert errors == [("train.jsonl", 4)]


def test_chosen_tool_calls_must_survive_the_template(tmp_path, tiny_model):
    from mlx_lm.tokenizer_utils import load

    # A plain ChatML template renders content only: the chosen tool call would train on empty text.
    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_model / name, folder / name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    data = pair_dir(tmp_path / "d", [tool_or_text_pair(i) for i in range(4)], [tool_or_text_pair(8)])
    report = check_data_dir(data, load(folder), splits=("train", "valid"))
    roundtrip = [(Path(f.file).name, f.line) for f in report.errors if f.code == "roundtrip"]
    assert roundtrip == [("train.jsonl", 1), ("train.jsonl", 3), ("valid.jsonl", 1)]  # the tool-call chosen sides
    assert all(f.message.startswith("chosen:") for f in report.errors if f.code == "roundtrip")
    assert check_data_dir(data, load(tiny_model), splits=("train", "valid")).ok
