"""Statistics shared by the engines, probes and eval (a low layer: it imports only the
package's errors). Where scipy has the statistic, scipy computes it."""

from __future__ import annotations

import math

import torch
from scipy import stats

from workbench.errors import WorkbenchError

#: Two-sample KS critical coefficient at the 5% level, as tabulated (sqrt(-ln(0.025) / 2)
#: = 1.35810...; the tabulated 1.358 keeps the published mixing steps).
KS_C_ALPHA_05 = 1.358


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b| of 1-D samples."""
    a_np = a.detach().double().cpu().reshape(-1).numpy()
    b_np = b.detach().double().cpu().reshape(-1).numpy()
    return float(stats.ks_2samp(a_np, b_np, method="asymp").statistic)


def ks_critical(n: int, m: int) -> float:
    """The 5% critical value of the two-sample KS statistic for sample sizes n and m."""
    return KS_C_ALPHA_05 * math.sqrt((n + m) / (n * m))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties); 0 if either side is constant
    or has fewer than 3 values."""
    if a.numel() < 3:
        return 0.0
    a_np = a.detach().double().cpu().reshape(-1).numpy()
    b_np = b.detach().double().cpu().reshape(-1).numpy()
    if a_np.min() == a_np.max() or b_np.min() == b_np.max():
        return 0.0
    return float(stats.spearmanr(a_np, b_np).statistic)


def last_agreeing(timesteps: list[int], agree: list[bool]) -> int | None:
    """The largest timestep (ascending ``timesteps``) up to which ``agree`` holds at every
    step from the start; ``None`` if it fails at once or holds only at the clean end -1."""
    found = None
    for t, ok in zip(timesteps, agree, strict=True):
        if not ok:
            break
        found = t
    return None if found == -1 else found


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending, float64) between the column spans of orthonormal
    ``a`` ``[..., d, k]`` and ``b`` ``[..., d, m]``; returns ``[..., min(k, m)]``.

    Each angle comes from its cosine (a singular value of ``a^T b``) and its sine (a singular
    value of the part of ``b`` outside span(a)) together, so small angles keep their accuracy
    (``arccos`` alone loses angles below about 1e-8 rad).
    """
    if a.shape[-2] != b.shape[-2] or a.shape[-1] > a.shape[-2] or b.shape[-1] > b.shape[-2]:
        raise WorkbenchError(
            f"principal_angles takes orthonormal columns [..., d, k] with k <= d, got "
            f"{list(a.shape)} and {list(b.shape)} (rows? transpose them)"
        )
    a, b = a.double(), b.double()
    n = min(a.shape[-1], b.shape[-1])
    overlap = a.transpose(-1, -2) @ b  # [..., k, m]
    cos = torch.linalg.svdvals(overlap)[..., :n].clamp(0, 1)  # descending
    sin = torch.linalg.svdvals(b - a @ overlap).flip(-1)[..., :n].clamp(0, 1)  # ascending
    return torch.atan2(sin, cos)


#: Bootstrap resamples of the intervals the analysis scripts state.
N_BOOT = 2000


def resample_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> torch.Tensor:
    """``n_boot`` bootstrap resamples of ``n`` items, ``[n_boot, n]`` indices drawn with
    replacement. The same ``n`` and ``seed`` give the same resamples, so statistics of two
    sets measured on the same seeds are resampled in pairs."""
    if n < 1:
        raise WorkbenchError(f"nothing to resample: n = {n}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_boot, n), generator=gen)


def percentile_interval(samples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap ``samples`` (1-D; NaNs left out)."""
    values = samples.detach().double().reshape(-1)
    values = values[~values.isnan()]
    if values.numel() == 0:
        return (math.nan, math.nan)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1.0 - tail], dtype=values.dtype))
    return (float(low), float(high))


def proportion_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy's binomial test)."""
    if n < 1:
        return (math.nan, math.nan)
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def binomial_p(successes: int, n: int, chance: float) -> float:
    """One-sided p-value that a proportion ``successes / n`` exceeds ``chance``."""
    return float(stats.binomtest(successes, n, chance, alternative="greater").pvalue)
