"""Cut skip connections: zero, kept at zero by training, and truly without effect."""

import pytest
import torch
from diffusers import UNet2DModel

from workbench.errors import WorkbenchError
from workbench.models.configs import ARCHITECTURES
from workbench.models.skips import cut_skips, skip_weight_norms, zero_cut_skips


def _unet(name="tiny-lit"):
    torch.manual_seed(0)
    return UNet2DModel(**ARCHITECTURES[name])


def _batch(unet, n=2):
    size = unet.config.sample_size
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=gen), torch.tensor([10, 900])


def test_cut_weights_stay_zero_through_training_and_others_learn():
    unet = _unet()
    before = skip_weight_norms(unet)
    assert all(v > 0 for v in before)
    cut_skips(unet, (0, 1))
    assert skip_weight_norms(unet)[:2] == [0.0, 0.0]
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-2, weight_decay=0.0)
    x, t = _batch(unet)
    for _ in range(3):
        loss = unet(x, t).sample.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = skip_weight_norms(unet)
    assert after[:2] == [0.0, 0.0]  # the gradient mask alone keeps them at exactly zero
    assert after[2] != pytest.approx(before[2])  # the uncut skips did train


def test_a_cut_skip_has_no_effect_on_the_output():
    unet = _unet().eval()
    cut_skips(unet, (0,))
    resnet = unet.up_blocks[0].resnets[0]
    hidden = unet.config.block_out_channels[-1]
    total = resnet.conv1.in_channels
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(2, hidden, 4, 4, generator=gen)
    temb = torch.randn(2, resnet.time_emb_proj.in_features, generator=gen)
    outs = [
        resnet(torch.cat([h, torch.randn(2, total - hidden, 4, 4, generator=gen) * s], 1), temb)
        for s in (1.0, 10.0)
    ]
    assert torch.equal(outs[0], outs[1])
    # ... while the hidden input does matter
    other = resnet(torch.cat([h + 1, torch.zeros(2, total - hidden, 4, 4)], 1), temb)
    assert not torch.allclose(other, outs[0])


def test_cutting_is_refused_where_groupnorm_mixes_hidden_and_skip_channels():
    unet = _unet("shapes32")
    with pytest.raises(WorkbenchError, match="GroupNorm mixes"):
        cut_skips(unet, (1,))
    with pytest.raises(WorkbenchError, match="does not exist"):
        zero_cut_skips(unet, (9,))


def test_bundled_shapes64_has_its_deepest_skips_cut(shapes64):
    norms = skip_weight_norms(shapes64.unet)
    assert norms[:2] == [0.0, 0.0] and min(norms[2:]) > 1.0
