"""``optembed artifacts``, ``show``, ``rm`` and ``gc``: browse, check and clean the artifact store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from optembed.errors import ArtifactError
from optembed_cli import ui
from optembed_cli.options import ArtifactsOpt, StageName, open_store
from pipelines.store import RESUME_PREFIX, Broken, Manifest, Store, strict_dumps

KEY_PARAMS = ("fmt", "model", "mode", "variant", "population", "generations", "init", "groups")
KEY_METRICS = (
    "rows", "val_auc", "val_logloss", "test_auc", "test_logloss", "best_val_auc", "best_val_logloss", "best_test_auc",
    "best_test_logloss", "sparsity", "embedding_params",
)
VerifyOpt = Annotated[
    bool, typer.Option("--verify", help="Hash every file and compare with the manifest (slow on large artifacts).")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Only show what would be removed.")]


@ui.handle_errors
def artifacts(
    stage: Annotated[StageName | None, typer.Option(help="Only this stage.")] = None,
    artifacts: ArtifactsOpt = None,
    verify: VerifyOpt = False,
    json: Annotated[bool, typer.Option("--json", help="Print the manifests as a JSON list.")] = False,
) -> None:
    """List the artifacts in the store, broken ones too; --verify checks every file's hash.

    Examples:

      optembed artifacts --stage retrain

      optembed artifacts --verify --json > store.json
    """
    store = open_store(artifacts)
    found, broken = store.scan(None if stage is None else str(stage))
    problems = {m.fingerprint: m.problems("full" if verify else "size") for m in found}
    if json:
        rows: list[dict[str, Any]] = [
            m.to_dict() | {"path": str(m.path), "problems": problems[m.fingerprint]} for m in found
        ]
        rows += [{"stage": b.stage, "fingerprint": b.name, "path": str(b.path), "broken": b.reason} for b in broken]
        ui.out.print_json(strict_dumps(rows))
    elif not found and not broken:
        ui.out.print(f"no artifacts in {store.root}")
    else:
        ui.out.print(_table(store, found, broken, problems, verify))
    damaged = [m for m in found if problems[m.fingerprint]]
    if damaged or broken:
        first = (
            f"{damaged[0].stage}/{damaged[0].fingerprint}: {problems[damaged[0].fingerprint][0]}"
            if damaged else f"{broken[0].stage}/{broken[0].name}: {broken[0].reason}"
        )
        count = len(damaged) + len(broken)
        message = (
            f"{count} of {len(found) + len(broken)} artifacts are broken or modified; first {first} "
            "(optembed rm ID or optembed gc removes them)"
        )
        if verify:
            raise ArtifactError(message)
        ui.err.print(Text(f"warning: {message}"), soft_wrap=True)


def _table(
    store: Store, found: list[Manifest], broken: list[Broken], problems: dict[str, list[str]], verify: bool
) -> Table:
    table = Table(
        title=f"artifacts in {store.root}", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
        collapse_padding=True,
    )
    for col in ("stage", "id", "created", "details", "status"):  # only details and status wrap: never cut
        table.add_column(col, no_wrap=col in ("stage", "id", "created"), overflow="fold", ratio=1 if col == "details" else None)
    for m in found:
        params = ", ".join(f"{k}={_short(m.params[k])}" for k in KEY_PARAMS if k in m.params)
        metrics = ", ".join(f"{k}={ui.fmt(m.metrics[k])}" for k in KEY_METRICS if k in m.metrics)
        issues = problems[m.fingerprint]
        if issues:
            status = Text("damaged: " + "; ".join(issues), style="red")
        elif not m.verified:
            status = Text("unverified (no file records)", style="yellow")
        else:
            status = Text(f"ok, {len(m.files)} files hashed" if verify else "ok")
        details = "\n".join(part for part in (params, metrics) if part)
        table.add_row(m.stage, m.fingerprint, created_text(m.created), Text(details), status)
    for b in broken:
        table.add_row(b.stage, b.name, "", "", Text(f"broken: {b.reason}", style="red"))
    return table


def created_text(created: str) -> str:
    """``2024-05-01 14:03`` from an ISO time (UTC; seconds left out)."""
    return created.replace("T", " ")[:16] if "T" in created else created[:16]


@ui.handle_errors
def show(
    ref: Annotated[str, typer.Argument(help="Artifact fingerprint prefix or folder.", metavar="ID", show_default=False)],
    artifacts: ArtifactsOpt = None,
    verify: VerifyOpt = False,
) -> None:
    """Print one artifact's manifest as JSON; --verify first checks every file's hash.

    Examples:

      optembed show 3fa2 --verify
    """
    manifest = open_store(artifacts).resolve(ref)
    if verify:
        checked = manifest.verify()
        if checked:
            ui.err.print(f"verified: {checked} files match their sizes and sha256 hashes", soft_wrap=True)
        else:
            ui.err.print("unverified: this manifest predates file records (rerun the stage with --force to add them)",
                         soft_wrap=True)
    ui.out.print_json(manifest.to_json())


@ui.handle_errors
def rm(
    ref: Annotated[str, typer.Argument(help="Artifact fingerprint prefix or folder.", metavar="ID", show_default=False)],
    cascade: Annotated[bool, typer.Option("--cascade", help="Also remove the artifacts built from it.")] = False,
    dry_run: DryRunOpt = False,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Remove one artifact; refused while other artifacts depend on it (unless --cascade).

    Examples:

      optembed rm 3fa2 --cascade --dry-run
    """
    store = open_store(artifacts)
    if not ref.strip():
        raise ArtifactError("give the id (or a prefix) of the artifact to remove")
    found, broken = store.scan()
    try:
        target = store.resolve(ref)
    except ArtifactError:
        damaged = [b for b in broken if b.name.startswith(ref)]
        if len(damaged) != 1:
            raise
        _remove(store, [(damaged[0].path, f"{damaged[0].stage}/{damaged[0].name} (broken)")], dry_run)
        return
    dependents = store.dependents(target, found)
    if dependents and not cascade:
        names = ", ".join(f"{m.stage} {m.fingerprint}" for m in dependents[:4])
        more = f" and {len(dependents) - 4} more" if len(dependents) > 4 else ""
        raise ArtifactError(
            f"cannot remove {target.stage} {target.fingerprint}: {len(dependents)} artifact(s) depend on it "
            f"({names}{more}); remove them first or pass --cascade"
        )
    doomed = [*reversed(dependents), target]  # newest dependents first, the target last
    entries: list[tuple[Path, str]] = []
    for m in doomed:
        assert m.path is not None
        entries.append((m.path, f"{m.stage}/{m.fingerprint}"))
        resume = m.path.parent / f"{RESUME_PREFIX}{m.fingerprint}"
        if resume.exists():
            entries.append((resume, f"{m.stage}/{resume.name}"))
    _remove(store, entries, dry_run)


@ui.handle_errors
def gc(
    dry_run: DryRunOpt = False,
    older_than: Annotated[
        float, typer.Option(help="Hours after which temporary folders of live runs and resume checkpoints count as stale.")
    ] = 24.0,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Remove temporary folders of interrupted runs, stale resume checkpoints and broken artifacts.

    Examples:

      optembed gc --dry-run
    """
    if not older_than >= 0:
        raise ArtifactError(f"--older-than must be a number of hours >= 0, got {older_than}")
    store = open_store(artifacts)
    garbage = store.garbage(max_age=older_than * 3600)
    if not garbage:
        ui.out.print(f"nothing to remove in {store.root}")
        return
    _remove(store, [(path, f"{path.parent.name}/{path.name}: {reason}") for path, reason in garbage], dry_run)


def _remove(store: Store, entries: list[tuple[Path, str]], dry_run: bool) -> None:
    total = 0
    for path, label in entries:
        size = _size(path)
        total += size
        if dry_run:
            ui.out.print(Text(f"would remove {label} ({_mb(size)})"))
        else:
            store.remove(path)
            ui.out.print(Text(f"removed {label} ({_mb(size)})"))
    verb = "would free" if dry_run else "freed"
    ui.out.print(f"{len(entries)} folder(s), {verb} {_mb(total)}")


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_symlink() or p.is_file())


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _short(value: object) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    return ui.fmt(value)
