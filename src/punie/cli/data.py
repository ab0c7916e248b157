"""``punie data``: check, split, balance and import datasets."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from punie.cli.console import err, out

if TYPE_CHECKING:
    from punie.data.check import CheckReport
    from punie.data.findings import Finding

app = typer.Typer(help="Check, split, balance and import datasets.", no_args_is_help=True)

SHOWN_PER_CODE = 20


@app.command("check")
def check(
    data_dir: Annotated[Path, typer.Argument(help="Directory with train.jsonl, valid.jsonl and test.jsonl.")],
    *,
    model: Annotated[str | None, typer.Option(help="Model whose tokenizer and chat template to check against.")] = None,
    no_tokenizer: Annotated[bool, typer.Option(help="Skip the template, length and round-trip checks.")] = False,
    max_seq_length: Annotated[int, typer.Option(help="Longest sequence training keeps, in tokens.")] = 2048,
    max_label_ratio: Annotated[float, typer.Option(help="Warn when one label outnumbers another by more.")] = 2.0,
    max_shared_arguments: Annotated[float, typer.Option(
        help="Warn when more than this share of a valid/test split's tool-call argument values occur in train.")
    ] = 0.5,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write summary.json and data_card.html "
                                                 "(default: DATA_DIR).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Print every finding, not the first 20 per check.")] = False,
) -> None:
    """Validate every record of a data directory; exit 1 on errors (warnings do not fail)."""
    from punie.data.check import check_data_dir
    from punie.errors import DataError
    from punie.models.loading import load_tokenizer
    from punie.report.data_card import write_check_outputs

    tokenizer = None if no_tokenizer else load_tokenizer(model)
    with err.status(f"Checking {data_dir} ..."):
        report = check_data_dir(data_dir, tokenizer, max_seq_length=max_seq_length, max_label_ratio=max_label_ratio,
                                max_shared_arguments=max_shared_arguments)
    print_check_report(report, show_all=show_all)
    summary, card = write_check_outputs(report, out_dir or data_dir)
    out.print(f"Wrote {summary} and {card}")
    if not report.ok:
        raise DataError(f"{len(report.errors)} errors in {data_dir} (listed above and in {summary})")


def print_check_report(report: CheckReport, *, show_all: bool = False) -> None:
    """The rich summary of a check: splits, token lengths, label balance, then findings by check."""
    out.print(f"[bold]{report.data_dir}[/bold]: {report.format} data, tokenizer {report.tokenizer or 'none'}, "
              f"--max-seq-length {report.max_seq_length}")
    table = Table("split", "records", "bad", "format", "dup", "near-dup", "tokens p50/p95/max", "too long")
    for name, s in report.splits.items():
        tokens = s.tokens if s.tokens and s.tokens["count"] else None
        bad = f"{s.bad_records} ({100 * s.bad_records / s.lines:.1f}%)" if s.bad_records else "0"
        table.add_row(name, str(s.records), bad, s.format or "-", str(s.duplicates),
                      str(s.near_duplicates), f"{tokens['p50']}/{tokens['p95']}/{tokens['max']}" if tokens else "-",
                      str(tokens["too_long"]) if tokens else "-")
    out.print(table)
    train = report.splits.get("train")
    if train and train.tokens and train.tokens["count"]:
        _print_histogram(train.tokens["histogram"])
    for name, s in report.splits.items():
        for label, counts in s.labels.items():
            total = sum(counts.values())
            shares = ", ".join(f"{value} {n} ({100 * n / total:.0f}%)" for value, n in list(counts.items())[:8])
            more = f", ... {len(counts) - 8} more" if len(counts) > 8 else ""
            out.print(f"  {name} {label}: {shares}{more}")
    _print_findings("error", report.errors, show_all)
    _print_findings("warning", report.warnings, show_all)
    verdict = "[green]no errors[/green]" if report.ok else f"[red]{len(report.errors)} errors[/red]"
    out.print(f"{verdict}, {len(report.warnings)} warnings")


def _print_histogram(histogram: list[dict[str, Any]]) -> None:
    peak = max(b["count"] for b in histogram) or 1
    out.print("  train token lengths:")
    for b in histogram:
        out.print(f"  {b['label']:>13} {b['count']:>6} {'#' * round(40 * b['count'] / peak)}")


def _print_findings(kind: str, findings: list[Finding], show_all: bool) -> None:
    by_code: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_code[f.code].append(f)
    style = "red" if kind == "error" else "yellow"
    for code, group in by_code.items():
        out.print(f"[{style}]{kind}[/{style}] [bold]{code}[/bold] ({len(group)})")
        shown = group if show_all else group[:SHOWN_PER_CODE]
        for f in shown:
            out.print(f"  {f.where}: {f.message}", markup=False)
        if len(group) > len(shown):
            out.print(f"  ... and {len(group) - len(shown)} more (--all, or summary.json)")


@app.command("split")
def split(
    file: Annotated[Path, typer.Argument(help="A JSONL file of records.")],
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for train/valid/test.jsonl.")],
    ratios: Annotated[str, typer.Option(help="Shares of train,valid[,test], summing to 1.")] = "0.8,0.1,0.1",
    stratify: Annotated[str | None, typer.Option(help="Keep this label's proportions in every split: a field "
                                                 "such as category, or 'answer' or 'tool'.")] = None,
    seed: Annotated[int, typer.Option(help="Shuffling seed; the same seed gives the same split.")] = 42,
    force: Annotated[bool, typer.Option(help="Replace existing split files in --out.")] = False,
) -> None:
    """Split FILE into train/valid/test: deterministic, stratified, duplicates kept in one split."""
    from punie.data.split import parse_ratios, split_file

    result = split_file(file, out_dir, ratios=parse_ratios(ratios), stratify=stratify, seed=seed, force=force)
    for name, path in result.paths.items():
        out.print(f"{path}: {result.counts[name]} records")
    if result.strata:
        table = Table(stratify or "label", *result.counts)
        for label, counts in result.strata.items():
            table.add_row(label, *(str(counts.get(name, 0)) for name in result.counts))
        out.print(table)


@app.command("balance")
def balance(
    data_dir: Annotated[Path, typer.Argument(help="Directory with train.jsonl (valid/test are copied unchanged).")],
    *,
    field: Annotated[str, typer.Option(help="Label to balance: a field such as category, or 'answer' or 'tool'.")],
    method: Annotated[str, typer.Option(help="upsample (repeat rarer records) or downsample (drop common ones).")]
    = "upsample",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory (default: DATA_DIR-balanced).")]
    = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
    force: Annotated[bool, typer.Option(help="Replace existing files in --out.")] = False,
) -> None:
    """Write a copy of DATA_DIR whose train.jsonl has every value of FIELD equally often."""
    from punie.data.balance import balance_dir

    target = out_dir or data_dir.parent / f"{data_dir.name}-balanced"
    result = balance_dir(data_dir, target, field=field, method=method, seed=seed, force=force)
    table = Table(field, "before", "after")
    for value in result.before:
        table.add_row(value, str(result.before[value]), str(result.after.get(value, 0)))
    out.print(table)
    if result.unlabeled:
        out.print(f"{result.unlabeled} records without {field!r} were kept as they are.")
    if method == "upsample":
        out.print("Upsampling repeats records; 'punie data check' lists the repeats as duplicates.")
    out.print(f"Wrote {result.out_dir / 'train.jsonl'}")


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="A .csv/.json/.jsonl/.parquet file, a directory saved with "
                                          "datasets' save_to_disk, or a Hugging Face dataset name (online).")],
    *,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")],
    fmt: Annotated[str, typer.Option("--format", help="chat, tools, completions, text or preference.")],
    mapping: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. prompt=question "
                                                       "(repeatable); chat takes user=, assistant=, system=.")] = None,
    keep: Annotated[str, typer.Option(help="Extra columns to keep as metadata, comma-separated.")] = "",
    split_name: Annotated[str | None, typer.Option("--split", help="Import only this split of the source.")] = None,
    force: Annotated[bool, typer.Option(help="Replace existing files in --out.")] = False,
) -> None:
    """Convert a dataset into punie's JSONL format, mapping columns onto fields."""
    from punie.data.importer import ALL_FILE, import_dataset, parse_mapping

    with err.status(f"Importing {source} ..."):
        result = import_dataset(source, out_dir, fmt=fmt, mapping=parse_mapping(mapping or []),
                                keep=tuple(c.strip() for c in keep.split(",") if c.strip()), split=split_name,
                                force=force)
    for name, path in result.paths.items():
        out.print(f"{path}: {result.counts[name]} records")
    if result.problems:
        out.print(f"[yellow]{len(result.problems)} problems in the imported records[/yellow], e.g.:")
        for f in result.problems[:5]:
            out.print(f"  {f.where}: {f.message}", markup=False)
    if ALL_FILE in result.paths:
        out.print(f"Next: punie data split {result.paths[ALL_FILE]} --out {out_dir}")
    else:
        out.print(f"Next: punie data check {out_dir}")
