"""Cutting a ``UNet2DModel``'s deepest skip connections, within the stock architecture.

Each resnet of an up block reads ``concat(hidden, skip)``. Zeroing the weights that read the
skip's channels (``conv1`` and the 1x1 ``conv_shortcut``) and keeping them at zero during
training removes that skip: the saved model is a plain diffusers ``UNet2DModel`` (it loads and
runs anywhere) whose up path sees those resolutions only through what comes up from below.
Cutting the skips of up blocks 0 and 1 of a U-Net with its mid block at 4x4 makes the mid-block
output h the only route for the 4x4 and 8x8 levels, which is what makes h carry the image.

The resnet's GroupNorm must not mix hidden and skip channels in one group (else the skip
would still move the hidden channels' normalisation): :func:`cut_skips` checks it.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from workbench.errors import WorkbenchError


def _skip_slices(unet: UNet2DModel, blocks: tuple[int, ...]) -> list[tuple[torch.Tensor, int]]:
    """``(weight, first skip channel)`` of every layer that reads a skip of ``blocks``,
    checked to be cuttable (hidden and skip channels in separate GroupNorm groups)."""
    out = []
    for b in blocks:
        if not 0 <= b < len(unet.up_blocks):
            raise WorkbenchError(f"up block {b} does not exist ({len(unet.up_blocks)} up blocks)")
        for resnet, hidden in _resnets_and_hidden(unet, b):
            per_group = resnet.conv1.in_channels // resnet.norm1.num_groups
            if hidden % per_group:
                raise WorkbenchError(
                    f"cannot cut the skips of up block {b}: its GroupNorm mixes hidden and skip "
                    f"channels ({hidden} + {resnet.conv1.in_channels - hidden} in groups of "
                    f"{per_group})"
                )
        out += _skip_slices_unchecked(unet, b)
    return out


def _resnets_and_hidden(unet: UNet2DModel, b: int) -> list[tuple[torch.nn.Module, int]]:
    """Each resnet of up block ``b`` with the number of hidden (non-skip) input channels."""
    block = unet.up_blocks[b]
    out = []
    for i, resnet in enumerate(block.resnets):
        hidden = _hidden_channels(unet, b) if i == 0 else block.resnets[i - 1].conv2.out_channels
        out.append((resnet, hidden))
    return out


def _hidden_channels(unet: UNet2DModel, block: int) -> int:
    if block == 0:
        return unet.config.block_out_channels[-1]
    return unet.up_blocks[block - 1].resnets[-1].conv2.out_channels


def cut_skips(
    unet: UNet2DModel, blocks: tuple[int, ...]
) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the weights reading the skips of up ``blocks`` and mask their gradients.

    Returns the gradient hooks (kept for the model's training life; remove them to undo).
    With zero weights and zero gradients, Adam leaves them at zero (weight decay 0);
    :func:`zero_cut_skips` re-zeroes them after each step all the same.
    """
    handles = []
    for weight, start in _skip_slices(unet, tuple(blocks)):
        with torch.no_grad():
            weight[:, start:] = 0
        mask = torch.ones_like(weight)
        mask[:, start:] = 0
        handles.append(weight.register_hook(lambda g, mask=mask: g * mask))
    return handles


def zero_cut_skips(unet: UNet2DModel, blocks: tuple[int, ...]) -> None:
    """Zero the weights that read the cut skip connections of ``blocks``."""
    with torch.no_grad():
        for weight, start in _skip_slices(unet, tuple(blocks)):
            weight[:, start:] = 0


def skip_weight_norms(unet: UNet2DModel) -> list[float]:
    """Per up block, the norm of the weights that read its skips (0: the skips are cut)."""
    norms = []
    for b in range(len(unet.up_blocks)):
        total = 0.0
        for weight, start in _skip_slices_unchecked(unet, b):
            total += float(weight.detach()[:, start:].float().pow(2).sum())
        norms.append(total**0.5)
    return norms


def _skip_slices_unchecked(unet: UNet2DModel, b: int) -> list[tuple[torch.Tensor, int]]:
    out = []
    for resnet, hidden in _resnets_and_hidden(unet, b):
        out.append((resnet.conv1.weight, hidden))
        if resnet.conv_shortcut is not None:
            out.append((resnet.conv_shortcut.weight, hidden))
    return out
