"""Every score with its uncertainty: intervals, layer-honest scores, rank ranges, rank agreement
between metrics, and prediction of downstream scores. docs/metrics.md explains the methods.

The resampling is the delete-d jackknife by half-sampling (Shao & Wu 1989; Shao & Tu 1995,
ch. 5): a seeded list of random halves of the N samples, each split used both ways (a half and
its complement), shared by every model of a run so that scores can be compared pairwise. The
bootstrap with replacement would duplicate samples, and a duplicate is its own nearest
neighbour, which breaks every kNN metric; a half has no duplicates. On each half the whole
layer sweep is redone (the best layer pair is chosen again), so the interval covers the layer
selection too. A kNN score on m < N samples has a different mean from the score on N (fewer
candidates to be a neighbour), so the interval is the full-sample score plus the *centred*
spread of the half-sample scores, scaled by the delete-d factor sqrt(m / (N - m)), which is 1
for halves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .align import prepare_states, sweep
from .errors import InvalidInputError
from .results import AgreementRecord, RunResult, ScoreRecord, metric_key

if TYPE_CHECKING:
    import numpy as np
    import torch

Z95 = 1.959963984540054  # the 97.5 % point of the standard normal


# --------------------------------------------------------------------------- the subsets


def half_samples(n: int, replicates: int, seed: int = 0) -> list[np.ndarray]:
    """``replicates`` sorted index sets: replicates // 2 random halves, each with its complement.

    Seeded, so every model of a run (and a rerun) sees the same subsets.
    """
    import numpy as np

    if replicates < 2 or replicates % 2:
        raise InvalidInputError(f"replicates must be an even number >= 2, got {replicates}")
    if n < 4:
        raise InvalidInputError(f"intervals need N >= 4 samples, got {n}")
    rng = np.random.default_rng(seed)
    subsets = []
    for _ in range(replicates // 2):
        order = rng.permutation(n)
        subsets += [np.sort(order[: n // 2]), np.sort(order[n // 2 :])]
    return subsets


def jackknife_factor(n: int) -> float:
    """The delete-d factor sqrt(m / d) for halves of N: m = N // 2 kept, d = N - m deleted."""
    m = n // 2
    return math.sqrt(m / (n - m))


# --------------------------------------------------------------------------- one pair


@dataclass
class Uncertainty:
    """A best-over-layer-pairs score's sampling interval and its layer-honest counterpart."""

    replicates: list[float]  # the best score on each half, in subset order
    se: float
    interval: tuple[float, float]
    honest: float | None  # the score minus the selection optimism
    optimism: float | None  # how much choosing the best of all layer pairs adds, at N samples


class ReplicateStates:
    """Each model's layers prepared once per subset (not once per pair), lazily."""

    def __init__(self, n: int, replicates: int, seed: int = 0) -> None:
        self.n = n
        self.subsets = half_samples(n, replicates, seed)
        self._states: dict[tuple[str, str], list[list[Any]]] = {}

    def states(self, key: str, metric: Any, layers: list[torch.Tensor]) -> list[list[Any]]:
        """``key`` names the model; a metric's params make part of the cache key."""
        cache_key = (key, repr(metric))
        if cache_key not in self._states:
            try:
                metric.check_n(self.n // 2)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"the intervals score halves of the {self.n} samples ({self.n // 2} each): "
                    f"{exc}; use more samples, or replicates = 0"
                ) from None
            self._states[cache_key] = [
                prepare_states(metric, [x[_index(idx, x)] for x in layers]) for idx in self.subsets
            ]
        return self._states[cache_key]

    def uncertainty(
        self,
        metric: Any,
        value: float,
        a: tuple[str, list[torch.Tensor]],
        b: tuple[str, list[torch.Tensor]],
    ) -> Uncertainty:
        """The interval and honest score of ``value``, the sweep's best on all N samples."""
        reps_a = self.states(a[0], metric, a[1])
        reps_b = self.states(b[0], metric, b[1])
        matrices = [sweep(metric, sa, sb) for sa, sb in zip(reps_a, reps_b, strict=True)]
        return uncertainty(value, matrices, self.n)


def _index(idx: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.as_tensor(idx, device=x.device)


def uncertainty(
    value: float,
    sweeps: list[tuple[np.ndarray, float, tuple[int, int]]],
    n: int,
) -> Uncertainty:
    """From the sweeps on the subsets of ``half_samples`` (pairs: a half, then its complement).

    Interval: value +- 1.96 * se, se = sqrt(m/d) * sd(best on each half). Honest score:
    cross-fitted, the pair chosen on one half scored on the other, both ways; the optimism
    is the halves' own best minus that, which shrinks like 1/sqrt(samples), so it is scaled
    from m = N/2 to N by sqrt(m / N). (A sweep keeps the maximum: every metric is higher-better.)
    """
    import numpy as np

    best = np.array([s[1] for s in sweeps])
    se = jackknife_factor(n) * float(best.std(ddof=1))
    gaps = []
    for (m0, best0, i0), (m1, best1, i1) in zip(sweeps[::2], sweeps[1::2], strict=True):
        crossed = (m1[i0] + m0[i1]) / 2  # NaN where a pair is undefined on the other half
        gaps.append((best0 + best1) / 2 - crossed)
    gaps = [g for g in gaps if not math.isnan(g)]
    optimism = float(np.mean(gaps)) * math.sqrt((n // 2) / n) if gaps else None
    return Uncertainty(
        replicates=[float(v) for v in best],
        se=se,
        interval=(value - Z95 * se, value + Z95 * se),
        honest=None if optimism is None else value - optimism,
        optimism=optimism,
    )


# --------------------------------------------------------------------------- p-values


def p_floor(permutations: int) -> float:
    """The smallest p-value B permutations can give: 1 / (B + 1)."""
    return 1 / (permutations + 1)


def at_floor(p_value: float, permutations: int) -> bool:
    return p_value <= p_floor(permutations) * (1 + 1e-9)


def format_p(p_value: float, permutations: int) -> str:
    """ "<= 0.0099" at the floor (no permutation reached the score), else the value."""
    if at_floor(p_value, permutations):
        return f"<= {math.floor(p_floor(permutations) * 1e4) / 1e4:.4f}"
    return f"{p_value:.4f}"


# --------------------------------------------------------------------------- rank ranges


def rank_ranges(
    values: dict[str, float],
    replicates: dict[str, list[float]],
    n: int,
) -> dict[str, tuple[int, int]]:
    """Each item's rank range at 95 %: from 1 + the items surely better to the number of items
    minus those surely worse. "Surely" means the paired difference's interval (from the same
    subsets' replicates) excludes 0. Items without replicates get the full range."""
    import numpy as np

    names = list(values)
    factor = jackknife_factor(n)
    out = {}
    for i in names:
        better = worse = 0
        for j in names:
            if i == j:
                continue
            ri, rj = replicates.get(i) or [], replicates.get(j) or []
            if len(ri) != len(rj) or len(ri) < 2:
                continue
            diff = values[j] - values[i]
            se = factor * float(np.std(np.subtract(rj, ri), ddof=1))
            if diff - Z95 * se > 0:
                better += 1
            elif diff + Z95 * se < 0:
                worse += 1
        out[i] = (1 + better, len(names) - worse)
    return out


def format_rank(rank: tuple[int, int] | None) -> str:
    if rank is None:
        return ""
    return str(rank[0]) if rank[0] == rank[1] else f"{rank[0]}-{rank[1]}"


# --------------------------------------------------------------------------- a run


def metric_label(score: ScoreRecord) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(score.params.items()))
    return f"{score.metric}({params})" if params else score.metric


def add_statistics(result: RunResult) -> RunResult:
    """Rank ranges among each metric's pairs, and the rank agreement between metrics."""
    by_metric: dict[tuple[str, str], list[ScoreRecord]] = {}
    for s in result.scores:
        by_metric.setdefault(metric_key(s), []).append(s)
    n = result.dataset.n
    for scores in by_metric.values():
        if not all(s.replicates for s in scores):
            continue
        ranks = rank_ranges(
            {_pair(s): s.value for s in scores}, {_pair(s): s.replicates for s in scores}, n
        )
        for s in scores:
            s.rank_range = ranks[_pair(s)]
    result.agreement = agreement(list(by_metric.values()), n)
    return result


def _pair(s: ScoreRecord) -> str:
    return f"{s.model_a} | {s.model_b}"


def agreement(groups: list[list[ScoreRecord]], n: int) -> list[AgreementRecord]:
    """Kendall's tau between every two metrics' rankings of the pairs both scored; its interval
    from the same half-sample replicates (tau on each, the delete-d spread around tau)."""
    import numpy as np
    from scipy.stats import kendalltau

    records = []
    for gi, first in enumerate(groups):
        for second in groups[gi + 1 :]:
            a = {_pair(s): s for s in first}
            b = {_pair(s): s for s in second}
            common = [p for p in a if p in b]
            if len(common) < 3:
                continue
            tau, p_value = kendalltau([a[p].value for p in common], [b[p].value for p in common])
            interval = None
            reps = [len(a[p].replicates) for p in common] + [len(b[p].replicates) for p in common]
            if min(reps) >= 2 and len(set(reps)) == 1:
                taus = [
                    kendalltau(
                        [a[p].replicates[r] for p in common], [b[p].replicates[r] for p in common]
                    )[0]
                    for r in range(reps[0])
                ]
                se = jackknife_factor(n) * float(np.nanstd(taus, ddof=1))
                if math.isfinite(se) and math.isfinite(tau):
                    interval = (max(-1.0, tau - Z95 * se), min(1.0, tau + Z95 * se))
            records.append(
                AgreementRecord(
                    metric_a=metric_label(first[0]),
                    metric_b=metric_label(second[0]),
                    n_pairs=len(common),
                    tau=None if math.isnan(tau) else float(tau),
                    interval=interval,
                    p_value=None if math.isnan(p_value) else float(p_value),
                )
            )
    return records


# --------------------------------------------------------------------------- prediction


@dataclass
class Prediction:
    value: float
    interval: tuple[float, float]


def predict(x: list[float], y: list[float], x_new: float, level: float = 0.95) -> Prediction:
    """The OLS line y = a + b x through the scored models, at ``x_new``, with its prediction
    interval yhat +- t(n-2) * s * sqrt(1 + 1/n + (x_new - mean x)^2 / Sxx)."""
    import numpy as np
    from scipy.stats import t as student_t

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xs)
    if n < 3:
        raise InvalidInputError(f"a prediction needs at least 3 models with both scores, got {n}")
    sxx = float(((xs - xs.mean()) ** 2).sum())
    if sxx == 0:
        raise InvalidInputError("every model has the same alignment; no line can be fitted")
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum()) / sxx
    intercept = float(ys.mean()) - slope * float(xs.mean())
    s = math.sqrt(float(((ys - intercept - slope * xs) ** 2).sum()) / (n - 2))
    half = (
        student_t.ppf(0.5 + level / 2, n - 2)
        * s
        * math.sqrt(1 + 1 / n + (x_new - xs.mean()) ** 2 / sxx)
    )
    value = intercept + slope * x_new
    return Prediction(value, (value - half, value + half))


def prediction_rows(
    alignment: dict[str, float], downstream: dict[str, float]
) -> list[dict[str, Any]]:
    """Every model's downstream score predicted from its alignment: from all the others for a
    model with a known score (leave-one-out, so ``inside`` checks the interval), from every
    known model for the rest."""
    known = sorted(m for m in alignment if m in downstream)
    if len(known) < 4:
        raise InvalidInputError(
            f"a prediction needs at least 4 models with both scores (3 to fit while one is "
            f"held out), got {len(known)}"
        )
    rows = []
    for model in sorted(alignment):
        train = [m for m in known if m != model]
        p = predict([alignment[m] for m in train], [downstream[m] for m in train], alignment[model])
        actual = downstream.get(model)
        rows.append(
            {
                "model": model,
                "alignment": alignment[model],
                "actual": actual,
                "predicted": p.value,
                "interval": p.interval,
                "inside": None if actual is None else p.interval[0] <= actual <= p.interval[1],
            }
        )
    return rows
