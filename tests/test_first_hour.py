"""The first hour: format guessing, training warnings, progress naming, the plan and its ETA,
the comparison legend, plain progress lines, help pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from optembed.data.sniff import infer_format, mismatch_hint
from optembed.errors import ConfigError
from optembed.progress import NullReporter, Prefixed, stage_label
from optembed.training.diagnostics import overfitting, too_few_steps, training_warnings
from optembed_cli.ui import PlainTask, legend
from pipelines.chain import ChainConfig, plan
from pipelines.eta import Eta, eta_text


def _criteo_line(label: int = 1) -> str:
    return "\t".join([str(label), *["3"] * 13, *["a1b2"] * 26])


def test_infer_criteo_kdd12_avazu_csv_parquet(tmp_path: Path) -> None:
    crit = tmp_path / "train.txt"
    crit.write_text("\n".join(_criteo_line(i % 2) for i in range(4)) + "\n")
    assert infer_format(crit).fmt == "criteo"
    kdd = tmp_path / "track2.txt"
    kdd.write_text("\n".join("\t".join(["0", "1", *["7"] * 10]) for _ in range(3)) + "\n")
    assert infer_format(kdd).fmt == "kdd12"
    ava = tmp_path / "train.csv"
    ava.write_text("id,click,hour,C1,banner_pos\n1,0,14102100,1005,0\n")
    assert infer_format(ava).fmt == "avazu"
    other = tmp_path / "clicks.tsv"
    other.write_text("label\tuser\tprice\n1\tu1\t3.5\n")
    guess = infer_format(other)
    assert (guess.fmt, guess.label, guess.delimiter) == ("csv", "label", "\t")
    assert infer_format(tmp_path / "data.parquet").fmt == "parquet"


def test_infer_asks_for_label_or_format(tmp_path: Path) -> None:
    no_label = tmp_path / "clicks.csv"
    no_label.write_text("clicked,user\n1,u1\n")
    with pytest.raises(ConfigError, match="--label"):
        infer_format(no_label)
    assert infer_format(no_label, label="clicked").label == "clicked"
    odd = tmp_path / "odd.txt"
    odd.write_text("1\t2\t3\n4\t5\t6\n")
    with pytest.raises(ConfigError, match="pass --format"):
        infer_format(odd)


def test_mismatch_hint_names_the_right_format(tmp_path: Path) -> None:
    ava = tmp_path / "train.csv"
    ava.write_text("id,click,hour,C1\n1,0,14102100,1005\n")
    assert "--format avazu" in (mismatch_hint(ava, "criteo") or "")
    assert mismatch_hint(ava, "avazu") is None


def test_too_few_steps_and_overfitting() -> None:
    assert too_few_steps(16_000, 2048) is not None and "--batch-size 256" in too_few_steps(16_000, 2048)
    assert too_few_steps(100_000, 1024) is None
    rising = [
        {"epoch": 1, "train_loss": 0.50, "val_logloss": 0.47},
        {"epoch": 2, "train_loss": 0.45, "val_logloss": 0.46},
        {"epoch": 3, "train_loss": 0.40, "val_logloss": 0.48},
    ]
    text = overfitting(rising)
    assert text is not None and "epoch 2 to 3" in text
    assert overfitting(rising[:2]) is None
    assert overfitting([{"epoch": 1, "train_loss": 0.5, "val_logloss": 0.4}]) is None
    assert len(training_warnings(rising, 16_000, 2048)) == 2


def test_stage_label_and_prefixed_reporter() -> None:
    assert stage_label("supernet", "epoch 1/4") == "supernet epoch 1/4"
    assert stage_label("search optembed", "search: widths") == "search optembed: widths"
    assert stage_label("evaluate", "evaluating") == "evaluate"
    seen: list[str] = []

    class Recorder(NullReporter):
        def task(self, description: str, total: float | None = None, unit: str = "it"):  # type: ignore[override]
            seen.append(description)
            return super().task(description, total, unit)

        def message(self, text: str) -> None:
            seen.append(text)

    rep = Prefixed(Recorder(), "retrain optembed")
    rep.task("epoch 2/3").close()
    rep.message("epoch 2 | loss 0.4")
    assert seen == ["retrain optembed epoch 2/3", "retrain optembed: epoch 2 | loss 0.4"]


def test_plan_and_eta() -> None:
    cfg = ChainConfig(data=Path("x.txt"), compress={"variants": ["optembed"]})
    steps = plan(cfg)
    assert steps[0] == "preprocess" and steps[-1] == "evaluate"
    assert "compress optembed" in steps and "retrain original" in steps
    eta = Eta(supernet_epochs=2, retrain_epochs=4)
    assert "estimated after the first supernet" in eta_text(eta, ["supernet optembed", "evaluate"], 3)
    eta.record("supernet dims-only", 10.0, cached=False)
    eta.record("supernet optembed", 99.0, cached=True)  # cached: no evidence of its cost
    seconds, unknown = eta.remaining(["supernet optembed", "retrain optembed", "evaluate"])
    assert seconds == pytest.approx(10.0 + 20.0) and unknown == []
    assert "about 30s left" in eta_text(eta, ["supernet optembed", "retrain optembed"], 12)


def test_legend_explains_every_label() -> None:
    lines = "\n".join(legend(["original", "optembed-e", "optembed + pq", "optembed (no retrain)"]))
    for word in ("Original:", "OptEmbed-E:", "+ pq:", "(no retrain):", "sparsity:", "ratio:"):
        assert word in lines
    assert "OptEmbed-D" not in lines


def test_plain_task_lines() -> None:
    now = [0.0]
    lines: list[str] = []
    gens = PlainTask("search optembed: widths", 3, "gen", clock=lambda: now[0], write=lines.append)
    gens.advance()
    gens.advance()
    assert lines == ["search optembed: widths: 1/3 gen (33%) (0s)", "search optembed: widths: 2/3 gen (67%) (0s)"]
    lines.clear()
    epoch = PlainTask("supernet epoch 1/2", 1000, "sample", interval=30, clock=lambda: now[0], write=lines.append)
    epoch.advance(100)
    assert lines == []  # no line before the interval
    now[0] = 31.0
    epoch.advance(100)
    assert len(lines) == 1 and "200/1,000 sample (20%)" in lines[0] and "left" in lines[0]


def test_help_groups_options_and_shows_examples(cli) -> None:
    res = cli("supernet", "--help")
    assert res.exit_code == 0
    for panel in ("Model", "Training", "Pruning", "Embedding optimizer", "Output"):
        assert panel in res.stdout
    assert "Examples" in res.stdout and "deepfm" in res.stdout
    bad = cli("supernet", "--model", "xgboost")
    assert bad.exit_code == 2 and "'xgboost' is not one of" in bad.output


COMMANDS = ("synth", "preprocess", "supernet", "search", "retrain", "baseline", "compress", "evaluate", "export",
            "predict", "run", "demo", "artifacts", "gc")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_pages_show_examples_and_no_bare_types(cli, command: str) -> None:
    """Every command shows examples; flags show no value type, free-text options a named metavar
    (<str> says nothing), and options sit in panels other than the catch-all one."""
    res = cli(command, "--help")
    assert res.exit_code == 0
    out = res.stdout
    assert "Examples" in out
    assert "<bool>" not in out
    option_lines = [ln for ln in out.splitlines() if ln.lstrip("│ *").startswith("--")]
    assert not [ln for ln in option_lines if "<str>" in ln]


@pytest.mark.parametrize(("args", "choices"), [
    (("baseline", "--method", "lsh"), "qr, pep, autofield, autodim"),
    (("baseline", "--method", "qr", "--operation", "xor"), "mult, add, concat"),
    (("baseline", "--method", "pep", "--granularity", "row"), "global, dim, field, field-dim"),
    (("baseline", "--method", "autodim", "--transform", "crop"), "linear, pad"),
    (("artifacts", "--stage", "train"), "preprocess, supernet"),
])
def test_fixed_choices_are_checked_by_the_parser(cli, args: tuple[str, ...], choices: str) -> None:
    res = cli(*args)
    flat = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2
    assert choices in flat


def test_quiet_and_verbose_exclude_each_other(cli) -> None:
    res = cli("--quiet", "--verbose", "artifacts")
    assert res.exit_code != 0
