"""The evaluation's report and console table: latency cells of models not timed, and the
embedding width D shown when the compared models differ in it (within 80 columns)."""

from __future__ import annotations

import io

from rich.console import Console

from optembed_cli.commands.evaluate import comparison_table
from pipelines.evaluate import report_markdown
from pipelines.store import Manifest

SPLIT = {"rows": 1_234_567, "positives": 234_567, "negatives": 1_000_000, "base_rate_logloss": 0.4567,
         "train_positive_ratio": 0.19}


def _row(variant: str, dim: int, model: str = "deepfm", **extra: object) -> dict:
    return {"variant": variant, "id": f"{dim:04d}56789abcdef", "model": model, "test_auc": 0.801234, "test_auc_se": 0.0021,
            "test_auc_ci": [0.797, 0.805], "test_logloss": 0.443211, "sparsity": 0.912345, "embedding_params": 1000,
            "embedding_bytes": 123_456_789, "ratio_vs_original": 123.4, "total_params": 2000, "file_bytes": 3000,
            "memory_bytes": 4000, "dim": dim, "widths": [dim, dim], "kept": [5, 6], **extra}


def _report(rows: list[dict]) -> str:
    return report_markdown(rows, Manifest("preprocess", 1, "c" * 64, {}), ["f0", "f1"], SPLIT)


def _cells(report: str, variant: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| deepfm | {variant} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_says_na_for_latency_not_measured() -> None:
    timed = _row("original", 16, latency_p50_ms=0.4123, latency_p99_ms=1.25, throughput_samples_per_s=12345.6)
    off = _row("optembed", 16, latency_skipped="off")
    unknown = _row("optembed-e", 16)  # an older metrics file: no reason recorded
    report = _report([timed, off, unknown])
    assert "nan" not in report
    header = [c.strip() for c in report.splitlines()[4].strip("|").split("|")]
    at = header.index("p50 ms")
    assert header[at : at + 3] == ["p50 ms", "p99 ms", "samples/s"]
    assert _cells(report, "original")[at : at + 3] == ["0.412", "1.250", "12,346"]
    assert _cells(report, "optembed")[at : at + 3] == ["n/a (off)"] * 3
    assert _cells(report, "optembed-e")[at : at + 3] == ["n/a"] * 3


def test_report_has_the_width_of_each_model() -> None:
    report = _report([_row("original", 64), _row("optembed", 16)])
    header = [c.strip() for c in report.splitlines()[4].strip("|").split("|")]
    rule = report.splitlines()[5]
    assert rule.count("---") == len(header)  # the rule has a cell per column
    at = header.index("D")
    assert _cells(report, "original")[at] == "64" and _cells(report, "optembed")[at] == "16"


def _render(rows: list[dict]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=80, force_terminal=False, color_system=None).print(comparison_table(rows, SPLIT))
    return buf.getvalue()


def test_console_table_shows_d_when_the_widths_differ_within_80_columns() -> None:
    rows = [_row("original", 64), _row("optembed (no retrain) [abc123]", 16), _row("optembed-e + pq", 64),
            _row("autodim", 128, "dcn")]
    text = _render(rows)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert text.count("123.4x") == len(rows)  # the last column is whole on every row
    header = next(line for line in text.splitlines() if line.startswith("variant"))
    assert header.split()[:3] == ["variant", "id", "D"]
    for r in rows:  # each model's line carries its D after its id
        line = next(x for x in text.splitlines() if r["id"][:8] in x)
        assert line.split(r["id"][:8])[1].split()[0] == str(r["dim"])
    same = _render([_row("original", 16), _row("optembed", 16)])
    assert " D " not in next(x for x in same.splitlines() if x.startswith("variant"))


def test_the_distilled_rows_are_named_with_their_teacher() -> None:
    from optembed_cli.commands.evaluate import distilled_line

    original = {**_row("original", 16), "id": "a" * 16}
    taught = [{**_row(v, 16), "teacher": "a" * 16, "distill": 0.5} for v in ("optembed", "qr")]
    elsewhere = {**_row("optembed-e", 16), "teacher": "b" * 16, "distill": 0.3}
    assert distilled_line([original, *taught]) == f"distilled from {'a' * 8} (weight 0.5, the original row): optembed, qr"
    assert distilled_line([original, elsewhere]) == f"distilled from {'b' * 8} (weight 0.3): optembed-e"
    assert distilled_line([original, _row("optembed", 8)]) == ""  # none distilled: no line
