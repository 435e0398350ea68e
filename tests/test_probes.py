import torch

from workbench.probes import PROBES, get_probe
from workbench.stats import ks_statistic


def test_norm_probe_sees_sampled_norms_concentrate_and_inverted_ones_off_the_shell(shapes32):
    """On the trained model: sampled ||x_t|| / sqrt(d) follows sqrt(a m2 + 1 - a) closely
    for t >= 499 (within 0.01) and concentrates (spread across samples under 0.03; about
    1 / sqrt(2 d) for pure noise), near 1 (the sqrt(d) shell) for t >= 799; DDIM-inverted
    Shapes images stay far inside that shell at T (the gap the mixing step closes)."""
    result = get_probe("norm")(shapes32, n=16, num_steps=10)
    sampled = torch.as_tensor(result.sampled)
    expected = torch.as_tensor(result.expected)
    late = [i for i, t in enumerate(result.timesteps) if t >= 499]
    assert (sampled[late].mean(1) - expected[late]).abs().max() < 0.01
    assert sampled[late].std(1).max() < 0.03
    shell = [i for i, t in enumerate(result.timesteps) if t >= 799]
    assert (sampled[shell].mean(1) - 1).abs().max() < 0.01
    assert float(torch.as_tensor(result.inverted)[-1].mean()) < 0.5
    assert result.ks[-1] > 0.9  # the two populations are told apart at T


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
