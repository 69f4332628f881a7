"""Accuracy-bounded row pruning: per field, keep its most important rows, as far as validation allows.

A field's *level* is the fraction of its rows kept: those of largest *impact* (training count x
squared distance of the row from the field's count-weighted mean row: what folding the row into
the OOV row costs over its traffic) or, with ``rank_by="norm"``, of largest embedding norm (the
OptEmbed criterion, which in a supernet that has begun to overfit favours rare, memorised ids over
frequent ones). Pruned ids read as the field's OOV row (id 0), exactly as ``retrain`` applies a row
mask, for the embedding and any per-id term alike. Level ``0`` empties the field (every id
reads the OOV row). The OOV row itself is always kept.

:func:`search_row_levels` works on a trained supernet in three steps:

1. every (field, level) pair is scored alone (all other fields unchanged) - one stacked pass
   over the validation rows per group of pairs;
2. fields are visited by how much their best admissible level gained (drops that *raise* the
   AUC, typically noise fields, come first);
3. each field takes its most aggressive level whose cumulative model stays within
   ``max_auc_drop`` of the best validation AUC seen so far (measured from the best so far, so
   the gain of dropping a useless field is never spent on a useful one).

Every comparison is paired (the same validation rows) and noise-aware: a change passes when its
AUC difference, *less* ``z`` standard errors (DeLong, :func:`optembed.metrics.paired_auc_se`),
is above ``-max_auc_drop``. Small validation sets therefore prune less - a measured gain smaller
than its noise is no evidence. A field is emptied only when emptying it alone does not lower the
validation AUC even after subtracting that noise margin, *and* emptying it beats keeping its top
rows (the smallest positive level) by more than the noise: a field the supernet barely uses may
still matter to a re-trained model, and its top rows cost little.

A positive level keeps at least ``min_traffic`` (default half) of its field's training traffic,
adding rows in ranking order past its row fraction when needed: the row levels cut a field's long
tail, and only emptying a field - which needs evidence of its own - removes more of its traffic.
A validation split cannot tell apart rows whose effects are real but smaller than its noise, and
a field's frequent values are where a re-trained model finds them.

A supernet of several tasks scores every mask on each task: a test passes only when it passes on
every task, each against its own tolerance (``max_auc_drop``: one value for all, or one per task)
from the reference mask's AUC on that task: of the base and the masks accepted so far, the one
whose worst task is nearest that task's best (with one task, the best AUC seen; see
:mod:`optembed.evolution.objectives`); a field is emptied only when that costs no task anything.
Fields are then visited by their best level's worst slack over the tasks. The results keep the
primary task's numbers under the plain keys and every task's beside them (``val_auc_<task>``,
``delta_<task>``, ``lower_bound_<task>``, ``reference_<task>``).

Pruned ids are scored as re-training will see them: the field's OOV row they are read as is
replaced by the mean of the rows it absorbs (weighted by how often each id occurs in the
validation rows; the same for DeepFM's per-id linear weights), not left at the value the
supernet trained it to for its own few ids (:mod:`optembed.masks.fold`). Without that, pruning a
field the supernet barely needs still shifts the head's input, and looks costly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from optembed.data.tensors import SplitTensors
from optembed.evolution.objectives import Tolerance, as_matrix, rank_value, reference_index, resolve_tolerances
from optembed.masks.dim_mask import apply_widths
from optembed.masks.fold import fold_field, folded_oov_rows, split_id_counts
from optembed.masks.oov import with_oov_rows
from optembed.masks.row_mask import row_norms
from optembed.metrics import auc, auc_components, paired_auc_se
from optembed.models.base import CTRModel
from optembed.training.evaluate import autocast
from optembed.training.tasks import split_columns, task_names

DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.25, 0.125, 0.0625, 0.03125, 0.0)
DEFAULT_Z = 1.0  # standard errors subtracted from every measured AUC difference
ROW_RANKS = ("impact", "norm")  # how a level's top rows are chosen (see field_rankings)
DEFAULT_MIN_TRAFFIC = 0.5  # a positive level keeps at least this share of its field's traffic

Components = tuple[Tensor, Tensor]

ProgressHook = Callable[[str, int, int], None]


@dataclass
class RowLevelResult:
    keep: Tensor  # BoolTensor(|f|): the rows kept (OOV rows always)
    levels: list[float]  # per field: the fraction of its candidate rows kept (1.0 = unchanged)
    base_auc: float  # validation AUC with every field unchanged
    final_auc: float  # validation AUC of the chosen row mask (full widths)
    best_auc: float  # the best validation AUC seen on the way (the tolerance's reference)
    z: float = DEFAULT_Z
    single: list[dict[str, float]] = field(default_factory=list)  # every (field, level) scored alone
    steps: list[dict[str, float]] = field(default_factory=list)  # every cumulative try, accepted or not
    passes: int = 0  # stacked candidate evaluations
    counts: Tensor | None = None  # the folds' weights: the training counts when given, else the split's id counts
    tasks: list[str] = field(default_factory=list)  # the tasks' names (several tasks only)
    base_aucs: list[float] = field(default_factory=list)  # every task's AUC of the base mask (primary first)
    final_aucs: list[float] = field(default_factory=list)  # every task's AUC of the chosen mask
    best_aucs: list[float] = field(default_factory=list)  # every task's AUC of the reference mask (the tolerances')


def field_rankings(model: CTRModel, base_keep: Tensor, counts: Tensor | None = None, by: str = "norm") -> list[Tensor]:
    """Per field: its local ids other than OOV that ``base_keep`` keeps, most important first.

    ``by="norm"``: decreasing row norm (the OptEmbed criterion). ``by="impact"``: decreasing
    ``c_i |e_i - m|^2 / (1 - c_i / C)`` (``m``: the count-weighted mean of the field's rows, ``C``
    their total count): exactly how much the count-weighted squared error of folding grows when row
    ``i`` is folded into the OOV row together with all the others (:mod:`optembed.masks.fold`);
    ties (ids never counted) by decreasing norm. ``counts``: ``(|f|,)`` id counts (needed
    for ``impact``).
    """
    if by not in ROW_RANKS:
        raise ValueError(f"unknown row ranking {by!r}; choose one of {', '.join(ROW_RANKS)}")
    if by == "impact" and counts is None:
        raise ValueError("ranking rows by impact needs id counts")
    emb = model.table_embedder().embedding
    out = []
    with torch.no_grad():
        for f, (start, rows) in enumerate(zip(emb.offsets.tolist(), emb.cardinalities, strict=True)):
            weight = emb.weight[start : start + rows].float()
            norms = row_norms(weight, model.cfg.norm)
            ids = torch.nonzero(base_keep[start : start + rows].to(weight.device)).flatten()
            ids = ids[ids != 0]
            order = ids[torch.argsort(norms[ids], descending=True, stable=True)]
            if by == "impact":
                assert counts is not None
                c = counts[start : start + rows].to(weight.device, torch.float64)
                total = float(c.sum())
                mean = (weight.double() * c[:, None]).sum(0) / total if total > 0 else weight.double().mean(0)
                # the growth of the folded rows' count-weighted scatter when row i joins them (the
                # others folded already): c_i |e_i - m|^2 / (1 - c_i / total)
                share = (c / total).clamp(max=1.0 - 1e-12) if total > 0 else torch.zeros_like(c)
                impact = c * ((weight.double() - mean) ** 2).sum(1) / (1.0 - share)
                order = order[torch.argsort(impact[order], descending=True, stable=True)]
            out.append(order)
    return out


def level_keep(ranking: Tensor, rows: int, level: float, counts: Tensor | None = None, min_traffic: float = 0.0) -> Tensor:
    """Local keep mask of one field (``BoolTensor(rows)``) at ``level``: OOV plus the top
    ``ceil(level * len(ranking))`` ids of ``ranking``.

    With ``counts`` (the field's ``(rows,)`` id counts) and ``min_traffic`` > 0, a positive level
    keeps further ids in ranking order until the kept ids (OOV included) carry at least that
    fraction of the field's counted traffic (or the ranking is exhausted); level 0 still empties.
    """
    keep = torch.zeros(rows, dtype=torch.bool, device=ranking.device)
    keep[0] = True
    k = math.ceil(level * len(ranking))
    if level > 0.0 and min_traffic > 0.0 and counts is not None and len(ranking) > 0:
        c = counts.to(ranking.device, torch.float64)
        total = float(c.sum())
        need = min_traffic * total * (1 - 1e-12)
        if total > 0 and float(c[0]) < need:
            covered = float(c[0]) + torch.cumsum(c[ranking], 0)
            enough = int(torch.searchsorted(covered, torch.tensor([need], dtype=torch.float64, device=covered.device)))
            k = max(k, min(enough + 1, len(ranking)))
    keep[ranking[:k]] = True
    return keep


class RowMaskScorer:
    """Validation AUC of candidate row masks that each differ from a base mask in one field.

    A candidate is ``(field, local keep mask)``; with ``field = -1`` the base itself. Pruned ids
    are read as the field's OOV id. Candidates are stacked along the batch in groups of
    ``group`` (one backbone call per group and validation batch).
    """

    def __init__(
        self,
        model: CTRModel,
        split: SplitTensors,
        device: torch.device,
        widths: Tensor | None = None,
        batch_size: int = 8192,
        group: int = 16,
        amp: str = "none",
        counts: Tensor | None = None,
    ) -> None:
        self.model = model.eval()
        self.split = split
        self.device = device
        self.widths = None if widths is None else widths.to(device)
        self.batch_size = batch_size
        self.group = group
        self.amp = amp
        self.labels = split.y.to(device)
        self.passes = 0
        self.components: list[Components] = []  # of the last call's candidates (the primary task's)
        self.task_components: list[list[Components]] = []  # of the last call's candidates, every task's
        self.table = model.table_embedder()
        emb = self.table.embedding
        self._local = (torch.arange(emb.num_rows, device=device) - emb.offsets[emb.field_of_row]).to(device)
        self.table.set_fixed_masks(None, None)  # ids are remapped here; nothing else may remap or mask
        self.table.set_row_mask(torch.ones(emb.num_rows, dtype=torch.bool))
        self.counts = None if counts is None else counts.to(device)
        self.id_tables = model.additive_id_tables() if counts is not None else []

    @property
    def folds(self) -> bool:
        """Whether pruned ids read their field's folded OOV row (:mod:`optembed.masks.fold`)."""
        return self.counts is not None

    def set_base(self, keep: Tensor) -> None:
        """The base mask ``BoolTensor(|f|)`` every candidate starts from."""
        keep = keep.to(self.device)
        self._remap = torch.where(keep, self._local, torch.zeros_like(self._local))
        if self.counts is not None:
            emb = self.table.embedding
            self._base_fold = folded_oov_rows(emb, keep, self.counts)
            self._base_shift = torch.zeros(emb.n_fields, device=self.device)  # summed into the logit per OOV read
            for table in self.id_tables:
                oov = table.weight.detach()[table.offsets]
                self._base_shift += (folded_oov_rows(table, keep, self.counts) - oov).sum(-1).float()

    def _folds(self, chunk: Sequence[tuple[int, Tensor | None]]) -> tuple[Tensor, Tensor]:
        """Per candidate of ``chunk``: the folded OOV rows ``(C, n, D)`` and logit shifts ``(C, n)``."""
        assert self.counts is not None
        emb = self.table.embedding
        rows = self._base_fold.unsqueeze(0).repeat(len(chunk), 1, 1)
        shift = self._base_shift.unsqueeze(0).repeat(len(chunk), 1)
        for c, (f, local_keep) in enumerate(chunk):
            if f < 0 or local_keep is None:
                continue
            start, size = int(emb.offsets[f]), emb.cardinalities[f]
            absorbed = ~local_keep.to(self.device)
            absorbed[0] = True
            counts = self.counts[start : start + size]
            rows[c, f] = fold_field(emb.weight.detach()[start : start + size], counts, absorbed)
            shift[c, f] = 0.0
            for table in self.id_tables:
                w = table.weight.detach()[start : start + size]
                shift[c, f] += float((fold_field(w, counts, absorbed) - w[0]).sum())
        return rows, shift

    def _logits(self, stacked: Tensor, folds: tuple[Tensor, Tensor] | None, b: int) -> Tensor:
        if folds is None:
            return self.model(stacked, self.widths)
        rows, shift = folds
        ids = self.table.ids(stacked)
        emb = self.table.lookup(ids, None)
        oov = stacked == 0
        emb = torch.where(oov.unsqueeze(-1), rows.repeat_interleave(b, 0).to(emb.dtype), emb)
        if self.widths is not None:
            emb = apply_widths(emb, self.widths)
        return self.model.head(emb, ids) + self.model.per_task((shift.repeat_interleave(b, 0) * oov).sum(-1).to(emb.dtype))

    @torch.inference_mode()
    def __call__(self, candidates: Sequence[tuple[int, Tensor | None]]) -> np.ndarray:
        """Every candidate's validation AUC: ``(C,)``, or ``(C, T)`` for a model of several tasks;
        :attr:`components` (the primary task's) and :attr:`task_components` (every task's) keep
        their DeLong components until the next call."""
        emb = self.table.embedding
        tasks = int(self.model.tasks)
        shape = (len(candidates), len(self.split)) + ((tasks,) if tasks > 1 else ())
        out = torch.empty(shape, device=self.device)
        for g in range(0, len(candidates), self.group):
            chunk = candidates[g : g + self.group]
            folds = self._folds(chunk) if self.folds else None
            rows_per_call = max(1, self.batch_size // len(chunk))
            start = 0
            for xb, _ in self.split.batches(rows_per_call, self.device):
                b = xb.shape[0]
                base = self._remap[emb.global_ids(xb)]
                stacked = base.repeat(len(chunk), 1)
                for c, (f, local_keep) in enumerate(chunk):
                    if f >= 0 and local_keep is not None:
                        col = xb[:, f]
                        stacked[c * b : (c + 1) * b, f] = torch.where(local_keep.to(self.device)[col], col, torch.zeros_like(col))
                with autocast(self.device, self.amp):
                    z = self._logits(stacked, folds, b)
                out[g : g + len(chunk), start : start + b] = z.float().view(len(chunk), b, *shape[2:])
                start += b
            self.passes += 1
        labels = split_columns(self.labels)
        self.task_components = [
            [auc_components(y, z) for y, z in zip(labels, split_columns(out[i]), strict=True)] for i in range(len(candidates))
        ]
        self.components = [parts[0] for parts in self.task_components]
        scores = np.array(
            [[auc(y, z) for y, z in zip(labels, split_columns(out[i]), strict=True)] for i in range(len(candidates))],
            dtype=np.float64,
        ).reshape(len(candidates), tasks)
        return scores[:, 0] if tasks == 1 else scores


def _by_task(prefix: str, values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``{prefix_<task>: value}`` for several tasks; nothing for one."""
    if len(names) < 2:
        return {}
    return {f"{prefix}_{name}": float(v) for name, v in zip(names, values, strict=True)}


def _se(a: Components, b: Components) -> float:
    se = paired_auc_se(a, b)
    return 0.0 if math.isnan(se) else se


def _set_field(keep: Tensor, offsets: list[int], f: int, local_keep: Tensor) -> Tensor:
    out = keep.clone()
    out[offsets[f] : offsets[f] + local_keep.numel()] = local_keep.to(out.device)
    return out


def search_row_levels(
    model: CTRModel,
    split: SplitTensors,
    device: torch.device,
    base_keep: Tensor,
    max_auc_drop: Tolerance,
    levels: Sequence[float] = DEFAULT_LEVELS,
    widths: Tensor | None = None,
    batch_size: int = 8192,
    amp: str = "none",
    progress: ProgressHook | None = None,
    z: float = DEFAULT_Z,
    fold: bool = True,
    rank_by: str = "impact",
    rank_counts: Tensor | None = None,
    min_traffic: float = DEFAULT_MIN_TRAFFIC,
) -> RowLevelResult:
    """Choose one row level per field on ``split`` (see the module docstring).

    ``base_keep`` (``BoolTensor(|f|)``, e.g. the supernet's learned row mask) bounds every level:
    a level keeps a fraction of the rows the base keeps. ``widths`` (``(n,)``) scores at those
    prefix widths instead of the full width. ``z``: standard errors of the paired AUC difference
    subtracted before any comparison (0: point estimates). ``fold``: pruned ids read their field's
    folded OOV row (the mean of the rows it absorbs, weighted by their ``rank_counts`` - the training
    counts - or, without them, by their counts in ``split``; see :mod:`optembed.masks.fold`) rather
    than the OOV row as trained - what re-training makes of it. Folding with the training counts keeps
    the scored split's own id counts out of the model it scores.
    ``rank_by``/``rank_counts``: which rows a level keeps (:func:`field_rankings`; the counts default
    to the ids' counts in ``split``). ``min_traffic``: a positive level keeps at least this fraction
    of its field's traffic (by the same counts; see :func:`level_keep`) - only emptying a field,
    which needs its own evidence, removes more.
    """
    emb = model.table_embedder().embedding
    offsets = emb.offsets.tolist()
    cards = list(emb.cardinalities)
    base = with_oov_rows(base_keep.to(device, torch.bool), emb.offsets)
    split_counts = split_id_counts(split, emb.cardinalities, emb.offsets.device)
    traffic = (rank_counts if rank_counts is not None else split_counts).to(device)
    rankings = field_rankings(model, base, traffic, rank_by)
    fold_counts = rank_counts.to(device) if rank_counts is not None else split_counts
    counts = fold_counts if fold else None
    scorer = RowMaskScorer(model, split, device, widths, batch_size=batch_size, amp=amp, counts=counts)
    scorer.set_base(base)
    levels = sorted({float(q) for q in levels if 0.0 <= q < 1.0}, reverse=True)
    pairs = [(f, q) for f in range(len(cards)) for q in levels if len(rankings[f]) > 0]
    keeps = {(f, q): level_keep(rankings[f], cards[f], q, traffic[offsets[f] : offsets[f] + cards[f]], min_traffic)
             for f, q in pairs}
    # drop levels that keep exactly what a less aggressive level keeps (tiny fields)
    distinct: list[tuple[int, float]] = []
    for f, q in pairs:
        same = [p for p in distinct if p[0] == f and torch.equal(keeps[p], keeps[(f, q)])]
        if not same and int(keeps[(f, q)].sum()) < 1 + len(rankings[f]):
            distinct.append((f, q))
    tasks = int(model.tasks)
    tol = np.asarray(resolve_tolerances(max_auc_drop, tasks), dtype=np.float64)
    names = task_names(split.tasks, tasks)

    def measure(cands: Sequence[tuple[int, Tensor | None]]) -> tuple[np.ndarray, list[list[Components]]]:
        """``(C, T)`` AUCs of ``cands`` and their per-task DeLong components."""
        values = as_matrix(scorer(cands), len(cands))
        parts = scorer.task_components
        scorer.components, scorer.task_components = [], []
        return values, parts

    def se(a: list[Components], b: list[Components]) -> np.ndarray:
        return np.array([_se(x, y) for x, y in zip(a, b, strict=True)], dtype=np.float64)

    def within(low: np.ndarray) -> bool:
        return bool(np.isfinite(low).all() and (low >= -tol).all())

    if progress:
        progress("rows: scoring each field alone", 0, len(distinct) + 1)
    values, parts = measure([(-1, None)])
    base_auc, base_parts = values[0], parts[0]
    single: dict[tuple[int, float], np.ndarray] = {}
    margin: dict[tuple[int, float], np.ndarray] = {}
    for start in range(0, len(distinct), scorer.group):  # a group at a time: C x N scores in memory
        chunk = distinct[start : start + scorer.group]
        values, parts = measure([(f, keeps[(f, q)]) for f, q in chunk])
        for p, s, c in zip(chunk, values, parts, strict=True):
            single[p] = s
            margin[p] = s - base_auc - z * se(c, base_parts)
    result = RowLevelResult(
        keep=base, levels=[1.0] * len(cards), base_auc=float(base_auc[0]), final_auc=float(base_auc[0]),
        best_auc=float(base_auc[0]), z=z,
        single=[{"field": f, "level": q, "val_auc": float(s[0]), "delta": float(s[0] - base_auc[0]),
                 "lower_bound": float(margin[(f, q)][0]), **_by_task("val_auc", s, names),
                 **_by_task("delta", s - base_auc, names), **_by_task("lower_bound", margin[(f, q)], names)}
                for (f, q), s in single.items()],
        tasks=names if tasks > 1 else [], base_aucs=base_auc.tolist(), final_aucs=base_auc.tolist(),
        best_aucs=base_auc.tolist(),
    )
    if progress:
        progress("rows: scoring each field alone", len(distinct) + 1, len(distinct) + 1)

    def admissible(f: int) -> list[float]:
        """Levels of field ``f`` whose single-field test passes on every task, most aggressive first."""
        out = []
        for q in sorted((q for g, q in distinct if g == f)):
            low = margin[(f, q)]
            if not np.isfinite(low).all():
                continue
            if q == 0.0 and (low < 0.0).any():
                continue  # a field is emptied only when that costs nothing on its own, noise included
            if (low >= -tol).all():
                out.append(q)
        return out

    options = {f: admissible(f) for f in range(len(cards))}
    for f, opts in options.items():  # emptying must also beat keeping the field's top rows
        kept_levels = [q for g, q in distinct if g == f and q > 0.0]
        if opts and opts[0] == 0.0 and kept_levels:
            smallest = min(kept_levels)
            pair, pair_parts = measure([(f, keeps[(f, 0.0)]), (f, keeps[(f, smallest)])])
            gain = (pair[0] - pair[1]) - z * se(pair_parts[0], pair_parts[1])
            if not np.isfinite(gain).all() or (gain < 0.0).any():
                options[f] = opts[1:]
    order = sorted(
        (f for f in options if options[f]),
        key=lambda f: -max(float(rank_value(single[(f, q)][None, :], base_auc, tol)[0]) for q in options[f]),
    )
    current = base
    best_auc, best_parts = base_auc.copy(), list(base_parts)
    accepted = [base_auc]  # the base and every accepted mask's AUCs: the reference is one of them
    accepted_parts = [list(base_parts)]
    for i, f in enumerate(order):
        if progress:
            progress("rows: building the mask", i, len(order))
        candidates = [(f, keeps[(f, q)]) for q in options[f]]
        scorer.set_base(current)
        tried, parts = measure(candidates)
        for q, s, c in zip(options[f], tried, parts, strict=True):  # most aggressive first
            low = s - best_auc - z * se(c, best_parts)
            ok = within(low)
            result.steps.append({"field": f, "level": q, "val_auc": float(s[0]), "accepted": ok,
                                 "reference": float(best_auc[0]), "lower_bound": float(low[0]),
                                 **_by_task("val_auc", s, names), **_by_task("reference", best_auc, names),
                                 **_by_task("lower_bound", low, names)})
            if ok:
                current = _set_field(current, offsets, f, keeps[(f, q)])
                result.levels[f] = q
                result.final_auc, result.final_aucs = float(s[0]), s.tolist()
                accepted.append(s)
                accepted_parts.append(list(c))
                ref = reference_index(np.stack(accepted))
                if ref is not None:
                    best_auc, best_parts = accepted[ref].copy(), accepted_parts[ref]
                result.best_auc, result.best_aucs = float(best_auc[0]), best_auc.tolist()
                break
    if progress:
        progress("rows: building the mask", len(order), len(order))
    result.keep = current.cpu()
    result.passes = scorer.passes
    result.counts = fold_counts
    return result
