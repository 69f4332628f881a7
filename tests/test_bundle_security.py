"""A bundle or an artifact someone else could write never makes optembed run code or hand out a
file, and a killed ``--force`` republish never loses an artifact.

Each attack is planted into a real export (a tiny pipeline built once) with every hash the
readers check rewritten to match (``bundle.json``'s records and ``bundle_sha256``, and for a store
artifact the manifest's records and ``manifest_sha256``), so only the checks of the content stand
between the file and the reader; then the command that reads it runs: exit 2, one line on stderr
naming the file at fault, no marker file, no output. The planted ``model.pt2`` expression is
first shown to run its payload when the archive is deserialized (``torch.export.load``).

The kill tests run ``optembed preprocess --force`` in a child process whose rename is patched
to SIGKILL the process at one exact point of the republish.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from optembed.data.synth import generate
from optembed.errors import ArtifactError
from optembed.export.bundle import BUNDLE_JSON, bundle_digest, onnx_scorer
from optembed.training.config import TrainConfig
from pipeline_fixtures import small_supernet, synthetic_preprocess
from pipelines import export, retrain
from pipelines.store import MANIFEST, Store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import planted  # noqa: E402

ROWS = 6000
SECRET = "the content of a file outside the bundle\n"
HAS_ONNX = export.onnx_available() is None


@dataclass
class Chain:
    root: Path
    store: Store
    retrain: str  # fingerprints
    export: str
    data: Path  # raw rows predict can score


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    root = tmp_path_factory.mktemp("security")
    store, _, _ = synthetic_preprocess(root, rows=ROWS)
    sn = small_supernet(store, "prune-only", epochs=1)
    r = retrain.run(retrain.RetrainStage(source=sn.fingerprint, train=TrainConfig(epochs=1, batch_size=512), device="cpu"), store)
    formats = ("onnx", "pt2") if HAS_ONNX else ("pt2",)
    m = export.run(export.ExportStage(source=r.fingerprint, formats=formats), store)
    data = root / "rows.txt"
    data.write_text("\n".join((root / f"synth-{ROWS}-0.txt").read_text().splitlines()[:40]) + "\n")
    return Chain(root, store, r.fingerprint, m.fingerprint, data)


@dataclass
class Scene:
    """A test's own copy of the store, a copied-out bundle, a secret beside them and a marker path."""

    work: Path
    chain: Chain

    @property
    def store(self) -> Path:
        return self.work / "artifacts"

    @property
    def artifact(self) -> Path:
        return self.store / "export" / self.chain.export

    @property
    def bundle(self) -> Path:
        return self.work / "bundle"

    @property
    def secret(self) -> Path:
        return self.work / "secret"

    @property
    def marker(self) -> Path:
        return self.work / "CODE-RAN.marker"


@pytest.fixture
def scene(chain: Chain, tmp_path: Path) -> Scene:
    shutil.copytree(chain.store.root, tmp_path / "artifacts")
    shutil.copytree(tmp_path / "artifacts" / "export" / chain.export, tmp_path / "bundle", ignore=shutil.ignore_patterns(MANIFEST))
    (tmp_path / "secret").write_text(SECRET)
    return Scene(tmp_path, chain)


def refused(result: Any, names: str) -> str:
    """The command refused with exit 2 and one stderr line (no traceback) naming ``names``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output + result.stderr, result.stderr
    assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.stderr)
    assert names in lines[0] and "internal error" not in lines[0], lines[0]
    return lines[0]


def predict_args(s: Scene, ref: str, runtime: str) -> list[Any]:
    return ["predict", ref, s.chain.data, "--out", s.work / "scores.csv", "--runtime", runtime, "--artifacts", s.store]


# -- the planted files ------------------------------------------------------------------------------


def expression(folder: Path, s: Scene) -> tuple[list[str], str]:
    planted.plant_expression(folder / "model.pt2", str(s.marker))
    return ["model.pt2"], "model.pt2"


def target(folder: Path, s: Scene) -> tuple[list[str], str]:
    planted.plant_target(folder / "model.pt2")
    return ["model.pt2"], "model.pt2"


def external_relative(folder: Path, s: Scene) -> tuple[list[str], str]:
    planted.plant_external_data(folder / "model.onnx", "../secret" if folder == s.bundle else "../../../secret")
    return ["model.onnx"], "model.onnx"


def external_absolute(folder: Path, s: Scene) -> tuple[list[str], str]:
    planted.plant_external_data(folder / "model.onnx", str(s.secret))
    return ["model.onnx"], "model.onnx"


def custom_domain(folder: Path, s: Scene) -> tuple[list[str], str]:
    planted.plant_custom_domain(folder / "model.onnx")
    return ["model.onnx"], "model.onnx"


def symlink_extra(folder: Path, s: Scene) -> tuple[list[str], str]:
    os.symlink(s.secret, folder / "notes.txt")
    return [], "notes.txt"


def symlink_model(folder: Path, s: Scene) -> tuple[list[str], str]:
    """``model.pt`` replaced by a link to an identical copy outside: every hash still matches."""
    outside = s.work / "model-elsewhere.pt"
    shutil.copy2(folder / "model.pt", outside)
    (folder / "model.pt").unlink()
    os.symlink(outside, folder / "model.pt")
    return [], "model.pt"


def symlink_folder(folder: Path, s: Scene) -> tuple[list[str], str]:
    outside = s.work / "vocab-elsewhere"
    shutil.copytree(folder / "vocab", outside)
    shutil.rmtree(folder / "vocab")
    os.symlink(outside, folder / "vocab")
    return [], "vocab"


def hardlink(folder: Path, s: Scene) -> tuple[list[str], str]:
    vocab = sorted((folder / "vocab").glob("*.parquet"))[0]
    os.link(vocab, s.work / "linked-elsewhere.parquet")
    return [], vocab.name


Plant = Callable[[Path, Scene], tuple[list[str], str]]
ONNX_ONLY = {external_relative, external_absolute, custom_domain}
ATTACKS: list[tuple[Plant, str]] = [
    (expression, "torch"), (target, "torch"), (external_relative, "onnx"), (external_absolute, "onnx"),
    (custom_domain, "onnx"), (symlink_extra, "torch"), (symlink_model, "torch"), (symlink_folder, "torch"), (hardlink, "torch"),
]


def plant(how: Plant, folder: Path, s: Scene) -> str:
    if how in ONNX_ONLY and not HAS_ONNX:
        pytest.skip("onnx is not installed")
    rels, names = how(folder, s)
    if rels:
        planted.resign_bundle(folder, rels)
    return names


def no_trace(s: Scene) -> None:
    """Nothing ran, nothing was written, the secret went nowhere."""
    assert not s.marker.exists(), "the planted payload ran"
    assert not (s.work / "scores.csv").exists() and not list(s.work.glob(".scores.csv.tmp-*"))


# -- the tests ----------------------------------------------------------------------------------------


def test_the_planted_expression_runs_code_when_deserialized(chain: Chain, tmp_path: Path) -> None:
    """The attack is live: ``torch.export.load`` of the planted archive creates the marker (which
    is why no command of optembed deserializes a bundle's ``model.pt2``)."""
    archive = tmp_path / "model.pt2"
    shutil.copy2(chain.store.root / "export" / chain.export / "model.pt2", archive)
    marker = tmp_path / "CODE-RAN.marker"
    planted.plant_expression(archive, str(marker))
    try:
        torch.export.load(str(archive))
    except Exception:  # whether or not the rest of the load succeeds, the expression was evaluated
        pass
    assert marker.exists()


@pytest.mark.parametrize("how, runtime", ATTACKS, ids=[a[0].__name__ for a in ATTACKS])
def test_a_planted_bundle_folder_is_refused_by_predict(scene: Scene, cli, how: Plant, runtime: str) -> None:
    names = plant(how, scene.bundle, scene)
    line = refused(cli(*predict_args(scene, str(scene.bundle), runtime)), names)
    assert str(scene.bundle) in line
    no_trace(scene)


@pytest.mark.parametrize("how, runtime", ATTACKS, ids=[a[0].__name__ for a in ATTACKS])
def test_a_planted_store_artifact_is_refused_by_predict_by_id(scene: Scene, cli, how: Plant, runtime: str) -> None:
    names = plant(how, scene.artifact, scene)
    for ref in (scene.chain.export[:10], scene.chain.retrain[:10]):  # the export, or the retrain's newest export
        refused(cli(*predict_args(scene, ref, runtime)), names)
        no_trace(scene)


@pytest.mark.parametrize("how", [symlink_extra, symlink_model, hardlink, expression], ids=lambda h: h.__name__)
def test_a_planted_artifact_is_not_copied_out_by_export(scene: Scene, cli, how: Plant) -> None:
    """``export --out`` finds the artifact cached and copies its bundle: refused, nothing written."""
    names = plant(how, scene.artifact, scene)
    out = scene.work / "copied"
    refused(cli("export", "--from", scene.chain.retrain[:10], "--out", out, "--artifacts", scene.store), names)
    assert not out.exists() and not list(scene.work.glob(".copied.tmp-*"))
    leaked = [p for p in scene.work.rglob("*") if p.is_file() and not p.is_symlink() and p.read_bytes() == SECRET.encode()]
    assert leaked == [scene.secret]
    assert not scene.marker.exists()


@pytest.mark.parametrize("how", [symlink_extra, symlink_model, symlink_folder, hardlink], ids=lambda h: h.__name__)
def test_links_in_an_artifact_fail_verify(scene: Scene, cli, how: Plant) -> None:
    names = plant(how, scene.artifact, scene)
    refused(cli("show", scene.chain.export[:10], "--verify", "--artifacts", scene.store), names)
    refused(cli("artifacts", "--verify", "--artifacts", scene.store), names)


@pytest.mark.skipif(not HAS_ONNX, reason="onnx is not installed")
@pytest.mark.parametrize("where", ["../secret", "absolute"])
def test_onnxruntime_keeps_its_own_external_data_guard(scene: Scene, where: str) -> None:
    """Without optembed's check in front, onnxruntime itself refuses weights from outside the
    model's folder (the second line of defence)."""
    graph = scene.bundle / "model.onnx"
    planted.plant_external_data(graph, str(scene.secret) if where == "absolute" else where)
    with pytest.raises(ArtifactError, match="cannot load"):
        onnx_scorer(graph)


def test_self_export_is_refused_and_the_artifact_stays(scene: Scene, cli) -> None:
    """``--out`` at the exported artifact's own folder (directly or through a link), inside the
    store, or at a folder holding it: one line, and the artifact is untouched."""
    link = scene.work / "link-into-store"
    os.symlink(scene.artifact, link)
    holder = scene.work / "holder"
    (holder / "artifacts").mkdir(parents=True)
    (holder / BUNDLE_JSON).write_text("{}")  # looks like a bundle folder to replace, and holds a store
    for out, store, said in (
        (scene.artifact, scene.store, "inside the artifact store"), (link, scene.store, "inside the artifact store"),
        (scene.store / "export" / "new", scene.store, "inside the artifact store"), (holder, holder / "artifacts", "holds the artifact store"),
        (scene.store, scene.store, "not empty"),
    ):
        line = refused(cli("export", "--from", scene.chain.retrain[:10], "--out", out, "--artifacts", store, "--force"), "--out")
        assert said in line, line
    result = cli("show", scene.chain.export[:10], "--verify", "--artifacts", scene.store)
    assert result.exit_code == 0 and "verified" in result.stderr, result.stderr
    assert cli("artifacts", "--verify", "--artifacts", scene.store).exit_code == 0


def _edit_bundle_json(folder: Path, edit: Callable[[dict[str, Any]], None], rehash: bool) -> None:
    path = folder / BUNDLE_JSON
    meta = json.loads(path.read_text())
    edit(meta)
    if rehash:
        meta["bundle_sha256"] = bundle_digest(meta)
    path.write_text(json.dumps(meta, indent=2) + "\n")


def _swap_vocab(meta: dict[str, Any]) -> None:
    fields = meta["preprocessing"]["fields"]
    fields[13]["vocab"], fields[14]["vocab"] = fields[14]["vocab"], fields[13]["vocab"]


def _oov(meta: dict[str, Any]) -> None:
    meta["preprocessing"]["fields"][13]["oov_id"] = 1


@pytest.mark.parametrize("edit", [_swap_vocab, _oov], ids=["swapped vocabularies", "oov_id"])
def test_an_edited_bundle_json_is_refused(scene: Scene, cli, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edited without rehashing: its own hash catches it; rehashed in a store artifact: the
    store manifest's record of bundle.json does."""
    _edit_bundle_json(scene.bundle, edit, rehash=False)
    refused(cli(*predict_args(scene, str(scene.bundle), "torch")), "bundle.json")
    _edit_bundle_json(scene.artifact, edit, rehash=True)
    refused(cli(*predict_args(scene, scene.chain.export[:10], "torch")), "bundle.json")
    no_trace(scene)


# -- a kill during a --force republish ------------------------------------------------------------

# The child: ``optembed ARGS`` with one rename patched. ``between``: the two-rename fallback (no
# exchange), killed after the old folder went aside and before the new one is renamed into place.
# ``after-exchange``: killed right after the exchange, before the old copy is removed.
CHILD = r"""
import os, signal, sys
from pathlib import Path
from pipelines import swap

mode = sys.argv[1]
if mode == "between":
    swap.exchange = lambda a, b: False
    real_replace = os.replace
    aside = []

    def replace(src, dst, **kw):
        if aside:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, **kw)
        if Path(dst).name.startswith(swap.OLD_PREFIX):
            aside.append(dst)

    os.replace = replace
else:
    real_exchange = swap.exchange

    def exchange(a, b):
        if real_exchange(a, b):
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    swap.exchange = exchange

from optembed_cli.main import main
main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("republish") / "rows.txt"
    generate(path, 3000, fmt="criteo", seed=3)
    return path


def _child(mode: str, *args: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPTEMBED_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, mode, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def _fingerprint(store: Path) -> str:
    (only,) = [p.name for p in (store / "preprocess").iterdir() if not p.name.startswith(".")]
    return only


@pytest.mark.parametrize("mode", ["between", "after-exchange"])
def test_a_kill_during_a_force_republish_keeps_the_artifact(small_data: Path, tmp_path: Path, cli, mode: str) -> None:
    store = tmp_path / "artifacts"
    assert cli("preprocess", small_data, "--artifacts", store).exit_code == 0
    fp = _fingerprint(store)
    stage_dir = store / "preprocess"
    done = _child(mode, "preprocess", small_data, "--artifacts", store, "--force")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    left = sorted(p.name for p in stage_dir.iterdir())
    if mode == "between":  # killed exactly there: the old copy aside, no final folder
        assert fp not in left and any(n.startswith(f".old-{fp}-") for n in left), left
    else:  # the new copy in place, the old one under the temporary name
        assert fp in left and any(n.startswith(f".tmp-{fp}-") for n in left), left
    # gc first (what once deleted both copies): it keeps the artifact, and removes the rest
    result = cli("gc", "--artifacts", store)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in stage_dir.iterdir()) == [fp]
    result = cli("show", fp[:10], "--verify", "--artifacts", store)
    assert result.exit_code == 0 and "verified" in result.stderr, result.stderr
    assert Store(store).lookup("preprocess", fp) is not None
    # a rerun republishes it
    result = cli("preprocess", small_data, "--artifacts", store, "--force")
    assert result.exit_code == 0 and "done:" in result.stdout, result.output
    assert sorted(p.name for p in stage_dir.iterdir()) == [fp]
    assert cli("artifacts", "--verify", "--artifacts", store).exit_code == 0


def test_a_reader_finds_the_artifact_a_killed_republish_left_aside(small_data: Path, tmp_path: Path, cli) -> None:
    """Killed between the renames, the next reader (no gc) renames the old copy back and reads it."""
    store = tmp_path / "artifacts"
    assert cli("preprocess", small_data, "--artifacts", store).exit_code == 0
    fp = _fingerprint(store)
    before = (store / "preprocess" / fp / MANIFEST).read_bytes()
    assert _child("between", "preprocess", small_data, "--artifacts", store, "--force").returncode == -signal.SIGKILL
    assert not (store / "preprocess" / fp).exists()
    result = cli("show", fp[:10], "--verify", "--artifacts", store)
    assert result.exit_code == 0 and "verified" in result.stderr, result.stderr
    assert (store / "preprocess" / fp / MANIFEST).read_bytes() == before
