"""``export --out DIR`` names DIR as the bundle's folder (the store's copy beside it)."""

from __future__ import annotations

from pathlib import Path

from optembed_cli import ui
from optembed_cli.commands.export import render
from pipelines.store import Manifest


def _manifest(path: Path) -> Manifest:
    return Manifest("export", 1, "ab" * 16, {}, metrics={"variant": "original", "test_auc": 0.7}, path=path)


def _bundle_line(manifest: Manifest, out: Path | None) -> str:
    with ui.out.capture() as captured:
        render(manifest, out)
    return next(line for line in captured.get().splitlines() if line.startswith("bundle: "))


def test_render_names_the_out_folder(tmp_path: Path, monkeypatch) -> None:
    store_dir = tmp_path / "artifacts" / "export" / ("ab" * 16)
    monkeypatch.chdir(tmp_path)
    line = _bundle_line(_manifest(store_dir), Path("bundle"))
    assert line.startswith(f"bundle: {tmp_path / 'bundle'} "), line  # the folder written, made absolute
    assert str(store_dir) in line.split(" ", 2)[2]  # the store's copy is said after it
    assert _bundle_line(_manifest(store_dir), None) == f"bundle: {store_dir}"
