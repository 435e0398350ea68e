"""Data-free directions from the weights of a self-attention block (docs/methods.md, section 3).

Lineage: closed-form factorisation (SeFa): the eigen/singular vectors of the weights that
read or write a latent code are directions the network is most sensitive to. Here the
code is h, the output of the block at the model's activation point (``h_point``, the mid
block by default), and the weights are those of that block's self-attention (the mid
block's, or the last one inside a down or up block; any other self-attention module of the
U-Net whose width equals h's channels can be named instead). Candidate matrices, each
turned into real, ranked unit directions in the channel space of h:

- ``q``, ``k``, ``v``: W ``[inner, C]`` (reads h): right singular vectors, ranked by
  singular value;
- ``o``: W_o ``[C, inner]`` (writes h): left singular vectors, by singular value;
- ``qk``: the symmetric part of W_q^T W_k ``[C, C]`` (the bilinear form of the attention
  scores): eigenvectors, ranked by abs(eigenvalue), scores the signed eigenvalues;
- ``ov``: W_o W_v ``[C, C]`` (what attention writes for what it reads): left singular
  vectors, by singular value. The default: on shapes64 its top direction moves a factor
  15x as far as random h channel directions, q-k's 1.8x (docs/findings.md, "What each
  engine's defaults give from the command line").

Multi-head: ``head=None`` uses all heads (W_q^T W_k and W_o W_v are then sums over heads,
as in the attention itself); ``head=i`` uses head i's slice only. Biases are ignored.
Sign rule: each direction is flipped so that its entry of largest magnitude is positive.

The directions are channel directions ``[C]``: an edit adds ``alpha * n`` at every spatial
position of h over the preset's h window with the asymmetric reverse step (``wb.edit``,
mode ``additive``). Everything here is a few small SVDs: milliseconds, no data.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.models.attention_processor import Attention

from workbench.directions import DirectionSet, sign_fixed
from workbench.engines import register_engine
from workbench.errors import WorkbenchError
from workbench.models.wrapper import DiffusionModel
from workbench.options import SINGLE_STEP, WINDOW, Option

MATRICES = ("q", "k", "v", "o", "qk", "ov")


def default_module(model: DiffusionModel) -> str:
    """Name of the self-attention of the block at ``model.h_point``, as its family says:
    the mid block's (see :func:`mid_block_self_attention`), the last self-attention inside
    a down or up block (the one nearest that block's output, h), or a transformer block's
    own attention (DiT's ``attn1``; SD3's joint ``attn``, whose ``to_q/k/v/out`` are the
    image stream's weights)."""
    own = model.arch.self_attention(model.h_point)
    if own is None:
        with_attention = [p for p in model.h_points() if model.arch.self_attention(p)]
        raise WorkbenchError(
            f"block {model.h_point} has no self-attention; points with one: "
            f"{', '.join(with_attention) or 'none'}"
        )
    return own


def mid_block_self_attention(names: Iterable[str]) -> str:
    """The mid-block self-attention among attention module ``names``: ``UNet2DModel``'s
    ``mid_block.attentions.0``, or the first transformer block's ``attn1`` in
    ``UNet2DConditionModel`` (whose ``attn2`` is cross-attention to the text)."""
    names = set(names)
    for name in ("mid_block.attentions.0.transformer_blocks.0.attn1", "mid_block.attentions.0"):
        if name in names:
            return name
    raise WorkbenchError("this U-Net has no mid-block self-attention")


def module_directions(
    attn: Attention, matrix: str, head: int | None = None, name: str = "the module"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranked channel directions ``[r, C]`` and scores ``[r]`` of one candidate matrix of a
    diffusers ``Attention`` module (self-attention only)."""
    if getattr(attn, "is_cross_attention", False):
        raise WorkbenchError(f"{name} is a cross-attention module; pick a self-attention one")
    return decompose(
        matrix,
        attn.to_q.weight,
        attn.to_k.weight,
        attn.to_v.weight,
        attn.to_out[0].weight,
        attn.heads,
        head,
    )


def decompose(
    matrix: str,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    heads: int,
    head: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranked directions ``[r, C]`` and scores ``[r]`` of one candidate matrix.

    ``w_q, w_k, w_v``: ``[inner, C]``; ``w_o``: ``[C, inner]`` (``nn.Linear`` weights).
    """
    if matrix not in MATRICES:
        raise WorkbenchError(f"unknown matrix {matrix!r}; choose from {', '.join(MATRICES)}")
    w_q, w_k, w_v, w_o = (w.detach().to("cpu", torch.float64) for w in (w_q, w_k, w_v, w_o))
    if head is not None:
        if not 0 <= head < heads:
            raise WorkbenchError(f"head {head} out of range for {heads} heads")
        d = w_q.shape[0] // heads
        rows = slice(head * d, (head + 1) * d)
        w_q, w_k, w_v, w_o = w_q[rows], w_k[rows], w_v[rows], w_o[:, rows]
    if matrix in ("q", "k", "v"):
        w = {"q": w_q, "k": w_k, "v": w_v}[matrix]
        _, s, vh = torch.linalg.svd(w, full_matrices=False)
        vectors, scores = vh, s
    elif matrix == "o":
        u, s, _ = torch.linalg.svd(w_o, full_matrices=False)
        vectors, scores = u.T, s
    elif matrix == "qk":
        m = w_q.T @ w_k
        evals, evecs = torch.linalg.eigh((m + m.T) / 2)
        order = evals.abs().argsort(descending=True)
        vectors, scores = evecs[:, order].T, evals[order]
    else:  # "ov"
        u, s, _ = torch.linalg.svd(w_o @ w_v, full_matrices=False)
        vectors, scores = u.T, s
    return sign_fixed(vectors).float(), scores.float()


OPTIONS = (
    SINGLE_STEP,
    Option("matrix", str, "ov", "candidate matrix", choices=MATRICES, control=True),
    Option("module", str, None, "attention module (default: the mid block's)"),
    Option("head", int, None, "one head only (default: all heads)", low=0),
    WINDOW,
)


@register_engine("attention", "data-free eigen-directions of self-attention weights", OPTIONS)
def attention_directions(
    model: DiffusionModel,
    k: int = 8,
    timestep: int | None = None,
    seed: int = 0,
    matrix: str = "ov",
    module: str | None = None,
    head: int | None = None,
    window: tuple[int, int] | None = None,
) -> DirectionSet:
    """Top-``k`` channel directions of one candidate matrix of a self-attention module.

    ``timestep`` makes a single-step edit; otherwise the edit window is ``window`` or the
    preset's ``h_window``. ``seed`` is accepted for a uniform interface and unused: the
    result depends on the weights alone.
    """
    modules = model.attention_modules()
    name = module or default_module(model)
    if name not in modules:
        raise WorkbenchError(f"no attention module {name!r}; known: {', '.join(sorted(modules))}")
    if not model.arch.is_self_attention(name):
        raise WorkbenchError(f"{name} is a cross-attention module; pick a self-attention one")
    w_q, w_k, w_v, w_o, heads = model.arch.attention_weights(name)
    channels = model.h_shape[0]
    if w_q.shape[1] != channels:
        raise WorkbenchError(
            f"{name} reads {w_q.shape[1]} channels but h has {channels}: "
            "its directions cannot edit h"
        )
    vectors, scores = decompose(matrix, w_q, w_k, w_v, w_o, heads, head)
    if not 1 <= k <= vectors.shape[0]:
        raise WorkbenchError(f"k must be in [1, {vectors.shape[0]}] for matrix {matrix!r}, got {k}")
    if timestep is not None:
        when: int | tuple[int, int] = model.check_timestep(timestep)
    else:
        when = tuple(window or model.preset.h_window)  # type: ignore[assignment]
    score_name = "eigenvalue" if matrix == "qk" else "singular value"
    return DirectionSet(
        vectors=vectors[:k],
        space="h",
        timestep=when,
        engine="attention",
        model_fingerprint=model.fingerprint,
        scores=scores[:k],
        score_name=score_name,
        params={"matrix": matrix, "module": name, "head": head, "k": k},
        labels=[f"attn-{matrix}[{i}]" for i in range(k)],
    )


def all_variants(
    model: DiffusionModel, k: int = 8, module: str | None = None
) -> dict[str, DirectionSet]:
    """Every candidate matrix of one module, all heads together."""
    return {m: attention_directions(model, k=k, matrix=m, module=module) for m in MATRICES}
