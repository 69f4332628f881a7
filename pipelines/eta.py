"""How long the remaining steps of a run are likely to take, in words for a progress line."""

from __future__ import annotations


class Eta:
    """Estimates the time the remaining steps take from the steps already run.

    A step kind (the first word of a step's name: ``supernet``, ``search``, ...) that ran (not
    cached) is expected to take its mean time again; a ``retrain`` or ``baseline`` (trained with
    the retrain options) before any ran is expected to take as long as a supernet per epoch. Kinds with no estimate are reported as unknown.
    """

    QUICK = ("preprocess", "evaluate")  # short next to training: counted as 0 until measured

    def __init__(self, supernet_epochs: int = 1, retrain_epochs: int = 1) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.epochs = {"supernet": max(supernet_epochs, 1), "retrain": max(retrain_epochs, 1)}

    def record(self, step: str, seconds: float, cached: bool) -> None:
        if not cached:
            self.seconds.setdefault(step.split()[0], []).append(seconds)

    def estimate(self, kind: str) -> float | None:
        times = self.seconds.get(kind)
        if times:
            return sum(times) / len(times)
        if kind in ("retrain", "baseline") and self.seconds.get("supernet"):
            per_epoch = sum(self.seconds["supernet"]) / len(self.seconds["supernet"]) / self.epochs["supernet"]
            return per_epoch * self.epochs["retrain"]
        return 0.0 if kind in self.QUICK else None

    def remaining(self, steps: list[str]) -> tuple[float, list[str]]:
        """Seconds the ``steps`` are expected to take, and the kinds without an estimate yet."""
        total, unknown = 0.0, []
        for step in steps:
            kind = step.split()[0]
            guess = self.estimate(kind)
            if guess is None:
                if kind not in unknown:
                    unknown.append(kind)
            else:
                total += guess
        return total, unknown


def duration(seconds: float) -> str:
    """``seconds`` for people: ``"45s"``, ``"3m05s"``, ``"1h02m"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_text(eta: Eta, steps: list[str], elapsed: float) -> str:
    """``"elapsed 1m05s, about 4m10s left"``; kinds not yet measured are named."""
    seconds, unknown = eta.remaining(steps)
    text = f"elapsed {duration(elapsed)}"
    if not steps:
        return text
    if not unknown:
        return f"{text}, about {duration(seconds)} left"
    later = f"estimated after the first {', '.join(unknown)}"
    if seconds >= 1:
        return f"{text}, at least {duration(seconds)} left; the rest {later}"
    return f"{text}, time left {later}"
