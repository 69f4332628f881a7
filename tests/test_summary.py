"""The result a stage's progress line ends with: each split's AUC beside its logloss."""

from __future__ import annotations

from pipelines.summary import result_summary


def test_trained_stage_says_both_splits() -> None:
    metrics = {"val_auc": 0.78012, "val_logloss": 0.46118, "test_auc": 0.77904, "test_logloss": 0.46224, "sparsity": 0.5}
    assert result_summary(metrics) == "val AUC 0.7801 logloss 0.4612, test AUC 0.7790 logloss 0.4622"


def test_search_and_evaluate_say_their_best() -> None:
    assert result_summary({"best_val_auc": 0.7, "best_val_logloss": 0.5}) == "val AUC 0.7000 logloss 0.5000"
    assert result_summary({"best_test_auc": 0.8, "best_test_logloss": 0.4, "models": 3}) == (
        "best test AUC 0.8000 logloss 0.4000"
    )


def test_missing_values() -> None:
    assert result_summary({"rows": 10}) == ""  # preprocess: no AUC
    assert result_summary({"val_auc": 0.7, "test_auc": None, "test_logloss": 0.4}) == "val AUC 0.7000 logloss -"
    assert result_summary({"val_auc": float("nan"), "best_val_auc": 0.6, "best_val_logloss": 0.5}) == (
        "val AUC 0.6000 logloss 0.5000"
    )
