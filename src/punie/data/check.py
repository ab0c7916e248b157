"""``punie data check``: validate a data directory before a single step is trained.

It reads ``train.jsonl``, ``valid.jsonl`` and ``test.jsonl`` and reports, with
``file:line`` for every bad record: lines that are not records, records that fit
no format or the wrong one, empty replies, tool calls the eval parser cannot
read or that name undeclared tools, duplicates, train/eval leakage, label
imbalance, and, given a tokenizer, records the chat template cannot render, tool
calls that do not survive a render-and-parse round trip, and token lengths
against ``max_seq_length``. Codes and their severity are in
:mod:`punie.data.findings`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from punie import fileio
from punie.chat.toolcalls import roundtrip_errors
from punie.data.dedupe import DuplicateIndex, RecordKeys, record_keys
from punie.data.findings import CODES, ERROR, Finding, severity
from punie.data.formats import TEMPLATE_FORMATS, preference_turns, scan_jsonl
from punie.data.labels import imbalance, label_counts
from punie.data.lengths import has_chat_template, length_stats, sequence_length
from punie.data.schema import validate_record
from punie.data.split import REQUIRED_SPLITS
from punie.data.split import SPLIT_NAMES as SPLITS
from punie.data.vocabulary import shared_vocabulary
from punie.errors import DataError

SUMMARY_MARKER = "punie_data_check"


@dataclass
class SplitStats:
    file: str
    lines: int = 0  # non-blank lines: records plus lines that are not records
    records: int = 0
    bad_records: int = 0  # lines that are not records plus records with an error
    format: str | None = None
    formats: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    near_duplicates: int = 0
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens: dict[str, Any] | None = None
    too_long_lines: list[int] = field(default_factory=list)


@dataclass
class CheckReport:
    data_dir: Path
    max_seq_length: int
    tokenizer: str | None = None
    format: str = "unknown"
    splits: dict[str, SplitStats] = field(default_factory=dict)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, file: Path | str, line: int | None, code: str, message: str) -> None:
        finding = Finding(str(file), line, code, message)
        (self.errors if severity(code) == ERROR else self.warnings).append(finding)

    def raise_for_errors(self) -> None:
        """DataError listing the first ten errors as file:line, when there are any (for ``punie train``)."""
        if self.ok:
            return
        shown = "\n".join(f"  {f.where}: {f.message}" for f in self.errors[:10])
        more = f"\n  ... and {len(self.errors) - 10} more" if len(self.errors) > 10 else ""
        raise DataError(f"the data in {self.data_dir} has {len(self.errors)} error(s); nothing was trained:\n"
                        f"{shown}{more}\nSee 'punie data check {self.data_dir}', or pass --no-check to skip.")

    def to_dict(self) -> dict[str, Any]:
        codes = Counter(f.code for f in self.errors + self.warnings)
        return {
            SUMMARY_MARKER: 1,
            "data_dir": str(self.data_dir),
            "ok": self.ok,
            "format": self.format,
            "max_seq_length": self.max_seq_length,
            "tokenizer": self.tokenizer,
            "counts": {"errors": len(self.errors), "warnings": len(self.warnings), "by_code": dict(codes)},
            "codes": {code: {"severity": sev, "meaning": text} for code, (sev, text) in CODES.items()},
            "splits": {name: asdict(stats) for name, stats in self.splits.items()},
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
        }


@dataclass
class _Row:
    line: int
    record: dict[str, Any]
    fmt: str | None
    clean: bool  # no error-level problem: safe to render and compare
    keys: RecordKeys


def check_data_dir(data_dir: Path, tokenizer: Any = None, *, max_seq_length: int = 2048,
                   splits: tuple[str, ...] = SPLITS, max_label_ratio: float = 2.0,
                   min_label_records: int = 10, max_shared_arguments: float = 0.5) -> CheckReport:
    """Check every split file in ``data_dir``; never raises for bad data, only for a missing directory."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a directory. A data directory holds train.jsonl and valid.jsonl "
                        "(and test.jsonl); make one from a single file with 'punie data split FILE --out DIR'.")
    report = CheckReport(data_dir=data_dir, max_seq_length=max_seq_length,
                         tokenizer=getattr(tokenizer, "name_or_path", None) or (None if tokenizer is None else "?"))
    if tokenizer is None:
        report.add(data_dir, None, "no-tokenizer", "no tokenizer given: chat-template rendering, token lengths and "
                   "tool-call round trips were not checked (pass --model)")
    loaded: dict[str, list[_Row]] = {}
    for split in splits:
        path = data_dir / f"{split}.jsonl"
        if not path.is_file():
            _report_missing(report, split, path)
            continue
        stats = SplitStats(file=str(path))
        report.splits[split] = stats
        loaded[split] = _read_split(report, path, stats)
        _check_duplicates(report, path, loaded[split], stats)
        stats.labels = label_counts([(r.record, r.fmt) for r in loaded[split] if r.clean])
    formats = {s: st.format for s, st in report.splits.items() if st.format}
    report.format = formats.get("train") or next(iter(formats.values()), "unknown")
    if tokenizer is not None:
        _check_rendering(report, loaded, tokenizer)
    _check_across_splits(report, loaded, max_label_ratio, min_label_records)
    _check_shared_arguments(report, loaded, max_shared_arguments)
    for split, rows in loaded.items():
        stats = report.splits[split]
        stats.bad_records = stats.lines - stats.records + sum(not r.clean for r in rows)
    return report


def _report_missing(report: CheckReport, split: str, path: Path) -> None:
    fix = (f"create it from one file with 'punie data split FILE --out {report.data_dir}' "
           "(writes train.jsonl, valid.jsonl and test.jsonl)")
    if split in REQUIRED_SPLITS:
        report.add(path, None, "missing-split", f"{path.name} is missing; {fix}")
    elif split == "test":
        report.add(path, None, "missing-test", f"{path.name} is missing; 'punie eval' needs held-out data; {fix}")


def _read_split(report: CheckReport, path: Path, stats: SplitStats) -> list[_Row]:
    records, line_problems = scan_jsonl(path)
    for problem in line_problems:
        report.add(path, problem.line, problem.code, problem.message)
    bad_lines = {p.line for p in line_problems if severity(p.code) == ERROR}
    rows = []
    for line, record in records:
        fmt, problems = validate_record(record)
        for found in problems:
            report.add(path, line, found.code, found.message)
        clean = fmt is not None and all(severity(p.code) != ERROR for p in problems)
        rows.append(_Row(line, record, fmt, clean, record_keys(record)))
    stats.records = len(rows)
    stats.lines = len(rows) + len(bad_lines)
    if not rows:
        detail = f" (all {len(bad_lines)} lines are bad)" if bad_lines else ""
        report.add(path, None, "empty-split", f"{path.name} has no records{detail}")
    formats = Counter(r.fmt for r in rows if r.fmt)
    stats.formats = dict(formats.most_common())
    if formats:
        stats.format = formats.most_common(1)[0][0]
        for row in rows:
            if row.fmt and row.fmt != stats.format:
                report.add(path, row.line, "mixed-format", f"this is a {row.fmt} record but {formats[stats.format]} "
                           f"of {path.name}'s records are {stats.format}; one file must use one format")
                row.clean = False
    return rows


def _check_duplicates(report: CheckReport, path: Path, rows: list[_Row], stats: SplitStats) -> None:
    index = DuplicateIndex()
    for row in rows:
        match = index.match(row.keys)
        if match:
            code, first = match
            how = "" if code == "duplicate" else " up to case, spacing and punctuation"
            report.add(path, row.line, code, f"repeats line {first}{how}")
            if code == "duplicate":
                stats.duplicates += 1
            else:
                stats.near_duplicates += 1
        index.add(row.keys, row.line)


def _check_rendering(report: CheckReport, loaded: dict[str, list[_Row]], tokenizer: Any) -> None:
    needs_template = any(r.fmt in TEMPLATE_FORMATS for rows in loaded.values() for r in rows)
    if needs_template and not has_chat_template(tokenizer):
        report.add(report.data_dir, None, "no-chat-template",
                   f"the tokenizer ({report.tokenizer}) has no chat template, but {report.format} data is rendered "
                   "through one; use a model with a chat template (punie's models get one at import)")
        return
    for split, rows in loaded.items():
        stats = report.splits[split]
        lengths = []
        for row in rows:
            if not row.clean:
                continue
            length = _render_row(report, Path(stats.file), row, tokenizer)
            if length is not None:
                lengths.append(length)
                if length > report.max_seq_length:
                    stats.too_long_lines.append(row.line)
        stats.tokens = length_stats(lengths, report.max_seq_length)
        if stats.too_long_lines:
            _report_too_long(report, stats)


def _render_row(report: CheckReport, path: Path, row: _Row, tokenizer: Any) -> int | None:
    assert row.fmt is not None  # clean rows have a format
    try:
        length = sequence_length(tokenizer, row.record, row.fmt)
    except Exception as exc:  # a template can raise anything (jinja errors, TypeError on odd values)
        report.add(path, row.line, "template-error", f"the chat template fails on this record: "
                   f"{type(exc).__name__}: {exc}")
        row.clean = False
        return None
    messages: list[dict[str, Any]] = row.record["messages"] if row.fmt in ("chat", "tools") else []
    chosen_at = None
    if row.fmt == "preference":  # the chosen reply is a target; a rejected one may be malformed on purpose
        prompt, chosen, _ = preference_turns(row.record)
        messages, chosen_at = prompt + [chosen], len(prompt)
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            for problem in roundtrip_errors(tokenizer, messages, row.record.get("tools"), i):
                where = "chosen" if i == chosen_at else f"messages[{i}]"
                report.add(path, row.line, "roundtrip", f"{where}: {problem}")
                row.clean = False
    return length


def _report_too_long(report: CheckReport, stats: SplitStats) -> None:
    n, total = len(stats.too_long_lines), stats.tokens["count"] if stats.tokens else 0
    lines = ", ".join(map(str, stats.too_long_lines[:10])) + (", ..." if n > 10 else "")
    longest = stats.tokens["max"] if stats.tokens else "?"
    report.add(stats.file, None, "too-long",
               f"{n} of {total} records ({100 * n / max(total, 1):.1f}%) are longer than --max-seq-length "
               f"{report.max_seq_length} tokens (longest {longest}) and would be truncated: lines {lines}. "
               "Raise --max-seq-length or shorten them.")


def _check_across_splits(report: CheckReport, loaded: dict[str, list[_Row]], max_ratio: float,
                         min_records: int) -> None:
    _check_leakage(report, loaded)
    formats = {s: st.format for s, st in report.splits.items() if st.format}
    if len(set(formats.values())) > 1:
        listed = ", ".join(f"{s}: {f}" for s, f in formats.items())
        report.add(report.data_dir, None, "split-format", f"splits use different formats ({listed})")
    for stats in report.splits.values():
        for label, counts in stats.labels.items():
            ratio = imbalance(counts, max_ratio, min_records)
            if ratio is not None:
                table = " : ".join(f"{n} {value!r}" for value, n in counts.items())
                report.add(stats.file, None, "imbalance",
                           f"{label} is {table} ({ratio:.1f}:1, above {max_ratio:g}:1); the model can learn to "
                           f"favour {next(iter(counts))!r}. Fix: 'punie data balance {report.data_dir} "
                           f"--field {label}' or collect more of the rarer values")


def _check_leakage(report: CheckReport, loaded: dict[str, list[_Row]]) -> None:
    """valid/test records that duplicate (exactly or nearly) a train record."""
    if "train" not in loaded:
        return
    train_file = report.splits["train"].file
    index = DuplicateIndex()
    for row in loaded["train"]:
        index.add(row.keys, row.line)
    for split, rows in loaded.items():
        if split == "train":
            continue
        for row in rows:
            match = index.match(row.keys)
            if match:
                row.clean = False
                how = "" if match[0] == "duplicate" else " (up to case, spacing and punctuation)"
                report.add(report.splits[split].file, row.line, "leakage",
                           f"the same record as {train_file}:{match[1]}{how}; evaluating on training data "
                           "overstates the result. Remove one, or re-split with 'punie data split', which keeps "
                           "duplicates in one split")


def _check_shared_arguments(report: CheckReport, loaded: dict[str, list[_Row]], max_share: float) -> None:
    """Warn when valid/test tool calls mostly use argument values train already has (vocabulary leakage)."""
    if "train" not in loaded:
        return
    train = [row.record for row in loaded["train"] if row.clean]
    for split, rows in loaded.items():
        if split == "train":
            continue
        found = shared_vocabulary(train, [row.record for row in rows if row.clean])
        if found.total and found.share > max_share:
            shown = ", ".join(repr(v) for v in found.shared[:5]) + (", ..." if len(found.shared) > 5 else "")
            report.add(report.splits[split].file, None, "shared-arguments",
                       f"{len(found.shared)} of its {found.total} distinct tool-call argument values "
                       f"({found.share:.0%}, above {max_share:.0%}) also occur in train ({shown}); a score on it "
                       "measures recall of train's vocabulary (paths, patterns, commands), not copying arguments "
                       "from the request. Fix: keep each project or source in one split, or evaluate on a suite "
                       "about projects training never saw")


def write_summary(report: CheckReport, out_dir: Path) -> Path:
    """Write ``summary.json`` into ``out_dir``; never over a file punie did not write.

    The HTML data card beside it is rendered by :mod:`punie.report.data_card` (data stays a leaf package).
    """
    summary = Path(out_dir) / "summary.json"
    refuse_foreign(summary, f'"{SUMMARY_MARKER}"')
    fileio.write_json(summary, report.to_dict())
    return summary


def refuse_foreign(path: Path, marker: str) -> None:
    """DataError if ``path`` exists without ``marker`` near its start, i.e. 'punie data check' did not write it."""
    if path.exists() and marker not in path.read_text(encoding="utf-8", errors="replace")[:4000]:
        raise DataError(f"{path} exists and was not written by 'punie data check'; move it away or pass another "
                        "output directory (--out)")
