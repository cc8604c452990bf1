"""FD, KID and IS from features, with torch-fidelity 0.4.0's formulas, defaults and random draws.

Ported from ``torch_fidelity.metric_fid`` / ``metric_kid`` / ``metric_isc`` (Apache License 2.0; FID after
bioinf-jku/TTUR), which cannot be imported without torchvision (see ``pipelines.evaluation.inception``);
``tests/evaluation/test_inception_reference.py`` compares the figures with torch-fidelity's own.

- **FD** (Fréchet distance) between Gaussians fitted to two feature sets: ``|mu1 - mu2|^2 + tr(S1) + tr(S2)
  - 2 tr(sqrt(S1 S2))``, the trace of the square root taken from the eigenvalues of ``S1 S2`` in float64.
- **KID**: unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3`` over ``subsets`` random subsets
  of ``subset_size`` from each set (numpy ``RandomState(seed)``, without replacement); mean and std.
- **IS**: ``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` equal parts of the logits, shuffled first with
  ``RandomState(seed)``; mean and std over the parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["KID_SUBSETS", "KID_SUBSET_SIZE", "IS_SPLITS", "SEED", "GaussianStatistics", "frechet_distance",
           "gaussian_statistics", "inception_score", "kernel_inception_distance"]

KID_SUBSETS, KID_SUBSET_SIZE, IS_SPLITS, SEED = 100, 1000, 10, 2020  # torch-fidelity's defaults


@dataclass
class GaussianStatistics:
    """Mean ``mu`` (D,) and covariance ``sigma`` (D, D) of a feature set, float64."""

    mu: np.ndarray
    sigma: np.ndarray


def gaussian_statistics(features: torch.Tensor) -> GaussianStatistics:
    """Mean and (unbiased) covariance of ``(N, D)`` features, as torch-fidelity computes them."""
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got {tuple(features.shape)}")
    array = features.cpu().numpy()
    return GaussianStatistics(np.mean(array, axis=0), np.cov(array, rowvar=False))


def frechet_distance(first: GaussianStatistics, second: GaussianStatistics) -> float:
    if first.mu.shape != second.mu.shape or first.sigma.shape != second.sigma.shape:
        raise ValueError(f"statistics of different feature sizes: {first.mu.shape} vs {second.mu.shape}")
    diff = first.mu - second.mu
    tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(first.sigma.dot(second.sigma)).astype("complex128")).real)
    return float(diff.dot(diff) + np.trace(first.sigma) + np.trace(second.sigma) - 2 * tr_covmean)


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    kt_xx_sum = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
    kt_yy_sum = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    return (kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy.sum(axis=0).sum() / (m * m)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.matmul(x, y.T) * (1.0 / x.shape[1]) + 1) ** 3


def kernel_inception_distance(first: torch.Tensor, second: torch.Tensor, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = SEED) -> tuple[float, float]:
    """KID ``(mean, std)`` of two ``(N, D)`` feature sets; ``subset_size`` must not exceed either N."""
    if first.shape[1] != second.shape[1]:
        raise ValueError(f"features of different sizes: {first.shape[1]} vs {second.shape[1]}")
    if subset_size < 2 or min(len(first), len(second)) < subset_size:
        raise ValueError(f"KID subset size {subset_size} needs at least that many images in each set "
                         f"(have {len(first)} and {len(second)}) and at least 2")
    x, y = first.cpu().numpy(), second.cpu().numpy()
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        fx = x[rng.choice(len(x), subset_size, replace=False)]
        fy = y[rng.choice(len(y), subset_size, replace=False)]
        mmds[i] = _mmd2_unbiased(_poly_kernel(fx, fx), _poly_kernel(fx, fy), _poly_kernel(fy, fy))
    return float(np.mean(mmds)), float(np.std(mmds))


def inception_score(logits: torch.Tensor, *, splits: int = IS_SPLITS, seed: int = SEED) -> tuple[float, float]:
    """IS ``(mean, std)`` of ``(N, classes)`` logits over ``splits`` shuffled parts."""
    n = len(logits)
    if n < splits:
        raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} images, got {n}")
    logits = logits[np.random.RandomState(seed).permutation(n), :].double()
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        q = p[part].mean(dim=0, keepdim=True)
        scores.append((p[part] * (log_p[part] - q.log())).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
