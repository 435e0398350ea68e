import math

import torch

from workbench.probes import PROBES, get_probe
from workbench.stats import ks_statistic


def test_gaussian_norm_concentrates_at_sqrt_d(tiny):
    """||x|| of N(0, I_d) is 1-Lipschitz: P(| ||x|| - E||x|| | >= s) <= 2 exp(-s^2 / 2), and
    sqrt(d) - 1 <= E||x|| <= sqrt(d). With 2000 draws, every draw lies within s = 4.5."""
    d = tiny.d
    norms = tiny.noise(range(2000)).flatten(1).norm(dim=1)
    assert (norms - math.sqrt(d)).abs().max() < 4.5 + 1
    assert math.sqrt(d) - 1 - 0.1 <= float(norms.mean()) <= math.sqrt(d) + 0.1


def test_ks_statistic():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, generator=gen), torch.randn(4000, generator=gen)
    assert ks_statistic(a, b) < 0.05
    assert ks_statistic(a, b + 10) == 1.0
    assert abs(ks_statistic(a, b + 0.5) - 0.197) < 0.04  # sup |Phi(x) - Phi(x - 0.5)|


def test_norm_probe(tiny, tmp_path):
    assert "norm" in PROBES
    result = get_probe("norm")(tiny, n=8, num_steps=10)
    assert result.timesteps[0] == -1 and result.timesteps[-1] == 999
    assert result.sampled.shape == (11, 8) and result.inverted.shape == (11, 8)
    # zero-terminal SNR: x_T is pure noise, so the expected ratio at T is exactly 1
    assert abs(result.expected[-1] - 1.0) < 1e-9
    assert abs(float(result.sampled[-1].mean()) - 1.0) < 0.05
    paths = result.save(tmp_path)
    assert sorted(p.name for p in paths) == ["norm.html", "norm.json"]
    assert "plotly" in (tmp_path / "norm.html").read_text()[:100000].lower()
