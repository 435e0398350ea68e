"""An attention processor under which forward- and reverse-mode AD both work.

The fused scaled-dot-product kernels (flash / memory-efficient) have no forward-mode AD
rule, and on CPU the stock processor returns a non-contiguous tensor on which the next
GroupNorm's ``view`` fails under ``torch.func.jvp``. This processor computes the attention
with :func:`softmax_attention`: the value from the stock fused kernel, its forward- and
reverse-mode derivatives by an autograd rule of our own that recomputes the attention
probabilities in blocks of queries and keeps none of them (or, with :data:`RECOMPUTE`
off, plain matrix products under PyTorch's own AD); it returns a contiguous tensor and
numerically equals the stock :class:`diffusers.models.attention_processor.AttnProcessor2_0`,
and on an MMDiT's joint attention (SD3: image and text tokens attend together) the stock
``JointAttnProcessor2_0``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch.nn.attention import SDPBackend, sdpa_kernel

#: Most attention scores (queries x keys, per head and sample) that
#: :func:`softmax_attention` forms at once: longer sequences go in blocks of queries.
SCORE_BLOCK = 2**20

#: Whether :func:`softmax_attention` differentiates through :class:`RecomputedAttention`
#: (probabilities recomputed in blocks, none kept for the reverse pass) rather than
#: through plain matrix products under PyTorch's AD (the reference it is tested against).
RECOMPUTE = True

_STOCK_SDPA = F.scaled_dot_product_attention  # before ``sdpa_in_blocks`` swaps it
_ANY_KERNEL = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.MATH,
]


def softmax_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` such that forward- and reverse-mode AD run
    through it: ``query`` ``[..., L_q, d]``, ``key`` and ``value`` ``[..., L_k, d]``,
    ``mask`` broadcasting to ``[..., L_q, L_k]`` (bool: True keeps a key; else added to
    the scores; a constant: its own derivative is not taken). Returns ``[..., L_q, d_v]``.

    Each query's softmax runs over the keys alone, so the queries go in blocks of at most
    :data:`SCORE_BLOCK` scores per head and sample, the same numbers as all at once: the
    score matrix of a long sequence (SD-1.5's 4096 tokens: 16.8M scores per head) is never
    whole, and neither is its tangent under forward mode for every column of a vmapped
    Jacobian product, nor its gradient under reverse mode. With :data:`RECOMPUTE` (the
    default) the value comes from the stock fused kernel and the derivatives from
    :class:`RecomputedAttention`, so that a reverse pass keeps no probabilities either.
    """
    same_lead = query.shape[:-2] == key.shape[:-2] == value.shape[:-2]
    tracked_mask = mask is not None and mask.requires_grad
    if RECOMPUTE and same_lead and not tracked_mask:
        if mask is not None and mask.is_floating_point() and mask.dtype != query.dtype:
            mask = mask.to(query.dtype)  # the fused kernel takes the queries' dtype
        return RecomputedAttention.apply(query, key, value, mask, scale)
    return _in_blocks(query, key, value, scale, mask)


def _in_blocks(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`softmax_attention` by plain matrix products, a block of queries at a time."""
    parts = [
        torch.matmul(_probabilities(query[..., rows, :], key, scale, _mask_rows(mask, rows)), value)
        for rows in _query_blocks(query, key)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)


def _query_blocks(query: torch.Tensor, key: torch.Tensor) -> list[slice]:
    """Slices of the queries, :data:`SCORE_BLOCK` scores (per head and sample) each."""
    rows = max(1, SCORE_BLOCK // key.shape[-2])
    return [slice(start, start + rows) for start in range(0, query.shape[-2], rows)]


def _mask_rows(mask: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    """The part of ``mask`` for the queries ``rows`` (all of it when it has one row)."""
    if mask is not None and mask.ndim >= 2 and mask.shape[-2] != 1:
        return mask[..., rows, :]
    return mask


def _probabilities(
    query: torch.Tensor, key: torch.Tensor, scale: float, mask: torch.Tensor | None
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` ``[..., L_q, L_k]``."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1)


class RecomputedAttention(torch.autograd.Function):
    """``softmax(q k^T * scale + mask) v`` with derivatives that keep no probabilities.

    The value is the stock ``scaled_dot_product_attention`` (its fused kernel where the
    device has one). The derivatives recompute the probabilities ``P`` a block of
    queries at a time (:data:`SCORE_BLOCK`) from the kept ``q``, ``k``, ``v`` and output
    ``o``, FlashAttention's way:

    - forward mode: ``do = P dv + W v - rowsum(W) o`` with
      ``W = P * (dq k^T + q dk^T) * scale``;
    - reverse mode: ``ds = P * (g v^T - rowsum(g * o)) * scale``, then ``dq = ds k``,
      ``dk = ds^T q``, ``dv = P^T g``.

    Under ``torch.func.vmap`` of a Jacobian product only the tangents carry the vmapped
    columns, so ``P`` is formed once per block for all of them; a reverse pass keeps
    ``q, k, v, o`` (the size of the activations) instead of every layer's score matrix.
    The mask is a constant: a tangent or gradient for it is refused.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        scale: float,
    ) -> torch.Tensor:
        """The stock attention, any kernel the device has (``jacobian_safe`` allows only
        the math one for the stock processors it keeps)."""
        with sdpa_kernel(_ANY_KERNEL):
            return _STOCK_SDPA(query, key, value, attn_mask=mask, scale=scale)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        """Keep ``q, k, v, o`` (and the mask) for either mode."""
        query, key, value, mask, scale = inputs
        ctx.scale = scale
        ctx.set_materialize_grads(False)  # no zero tangents made up for constant inputs
        kept = (query, key, value, output) + (() if mask is None else (mask,))
        ctx.save_for_backward(*kept)
        ctx.save_for_forward(*kept)

    @staticmethod
    def jvp(
        ctx: Any,
        d_query: torch.Tensor | None,
        d_key: torch.Tensor | None,
        d_value: torch.Tensor | None,
        d_mask: torch.Tensor | None,
        _d_scale: None,
    ) -> torch.Tensor:
        """The output's tangent ``[..., L_q, d_v]``, a block of queries at a time."""
        if d_mask is not None:
            raise ValueError("attention mask depends on the input: its tangent is not taken")
        query, key, value, out, *mask = ctx.saved_tensors
        mask = mask[0] if mask else None
        both = None
        if d_query is not None and d_key is not None:  # dq k^T + q dk^T as one product
            both = torch.cat([key, d_key], dim=-1).transpose(-1, -2)
        parts = []
        for rows in _query_blocks(query, key):
            part_query = query[..., rows, :]
            probs = _probabilities(part_query, key, ctx.scale, _mask_rows(mask, rows))
            if both is not None:
                d_scores = torch.matmul(torch.cat([d_query[..., rows, :], part_query], -1), both)
            elif d_query is not None:
                d_scores = torch.matmul(d_query[..., rows, :], key.transpose(-1, -2))
            elif d_key is not None:
                d_scores = torch.matmul(part_query, d_key.transpose(-1, -2))
            else:
                d_scores = None
            part = torch.zeros_like(out[..., rows, :])
            if d_scores is not None:
                weights = _scaled_by(d_scores, probs, ctx.scale)
                part = torch.matmul(weights, value)
                part = part - weights.sum(-1, keepdim=True) * out[..., rows, :]
            if d_value is not None:
                part = part + torch.matmul(probs, d_value)
            parts.append(part)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        """Gradients for ``q, k, v`` from the output's ``grad``, a block of queries at a
        time (the keys' and values' summed over the blocks)."""
        if ctx.needs_input_grad[3]:
            raise ValueError("attention mask depends on the input: its gradient is not taken")
        query, key, value, out, *mask = ctx.saved_tensors
        mask = mask[0] if mask else None
        d_query, d_key, d_value = [], None, None
        for rows in _query_blocks(query, key):
            part_query, part_grad = query[..., rows, :], grad[..., rows, :]
            probs = _probabilities(part_query, key, ctx.scale, _mask_rows(mask, rows))
            along = (part_grad * out[..., rows, :]).sum(-1, keepdim=True)
            d_probs = torch.matmul(part_grad, value.transpose(-1, -2))
            d_scores = _scaled_by(d_probs, probs, ctx.scale, minus=along)
            d_query.append(torch.matmul(d_scores, key))
            by_keys = torch.matmul(d_scores.transpose(-1, -2), part_query)
            by_values = torch.matmul(probs.transpose(-1, -2), part_grad)
            d_key = by_keys if d_key is None else d_key + by_keys
            d_value = by_values if d_value is None else d_value + by_values
        d_query = d_query[0] if len(d_query) == 1 else torch.cat(d_query, dim=-2)
        return d_query, d_key, d_value, None, None


def _scaled_by(
    block: torch.Tensor, probs: torch.Tensor, scale: float, minus: torch.Tensor | None = None
) -> torch.Tensor:
    """``(block - minus) * probs * scale``, in place where it can be: a block of scores is
    the largest tensor per vmapped column, so a product pass holds one per column, not
    three (a step is not in place where its other operand carries a vmapped dimension
    that ``block`` lacks, e.g. a batch of samples under one shared tangent)."""
    if minus is not None:
        block = _in_place(block, "sub", minus)
    return _in_place(block, "mul", probs).mul_(scale)


def _in_place(block: torch.Tensor, op: str, other: torch.Tensor) -> torch.Tensor:
    """``block.<op>_(other)``, or ``torch.<op>(block, other)`` where vmap refuses it."""
    try:
        return getattr(block, f"{op}_")(other)
    except RuntimeError:
        return getattr(torch, op)(block, other)


@contextlib.contextmanager
def sdpa_in_blocks() -> Iterator[None]:
    """Within the block, ``torch.nn.functional.scaled_dot_product_attention`` is
    :func:`softmax_attention` (derivatives in blocks of queries), so the
    processors a family keeps (Lumina 2's, Kandinsky 3's, HunyuanDiT's) hold no whole
    score matrix under a vmapped Jacobian product either; the stock function is put back
    on exit, also after an exception. A call with dropout goes to the stock function."""
    stock = F.scaled_dot_product_attention

    def sdpa(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        if dropout_p:
            return stock(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                         enable_gqa=enable_gqa)  # fmt: skip
        if enable_gqa and key.shape[-3] != query.shape[-3]:  # grouped heads share k, v
            groups = query.shape[-3] // key.shape[-3]
            key = key.repeat_interleave(groups, dim=-3)
            value = value.repeat_interleave(groups, dim=-3)
        if is_causal:
            n_q, n_k = query.shape[-2], key.shape[-2]
            causal = torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).tril()
            if attn_mask is None or attn_mask.dtype == torch.bool:
                attn_mask = causal if attn_mask is None else attn_mask & causal
            else:  # an additive mask
                attn_mask = attn_mask.masked_fill(~causal, float("-inf"))
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        return softmax_attention(query, key, value, scale, attn_mask)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = stock


class JacobianSafeAttnProcessor:
    """Explicit ``softmax(q k^T * scale) v`` attention, contiguous output."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        """Explicit softmax attention (forward-AD safe), same result as diffusers' processor."""
        if getattr(attn, "add_q_proj", None) is not None:
            return _joint(attn, hidden_states, encoder_hidden_states)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.reshape(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(hidden_states)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, L, heads*d] -> [B, heads, L, d]
            return x.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = heads(query), heads(key), heads(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            mask = mask.reshape(batch, attn.heads, -1, mask.shape[-1])
        out = softmax_attention(query, key, value, head_dim**-0.5, mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        return out.contiguous()


def _joint(
    attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor | None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """MMDiT joint attention: image tokens (``to_q/k/v``) and text tokens (``add_*_proj``)
    in one softmax; returns the image part (and the text part, projected unless the block
    is ``context_pre_only``), as diffusers' ``JointAttnProcessor2_0``."""
    batch, n_image = hidden_states.shape[0], hidden_states.shape[1]
    head_dim = attn.to_k.out_features // attn.heads

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)

    query = heads(attn.to_q(hidden_states))
    key = heads(attn.to_k(hidden_states))
    value = heads(attn.to_v(hidden_states))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    if context is not None:
        c_query = heads(attn.add_q_proj(context))
        c_key = heads(attn.add_k_proj(context))
        c_value = heads(attn.add_v_proj(context))
        if attn.norm_added_q is not None:
            c_query = attn.norm_added_q(c_query)
        if attn.norm_added_k is not None:
            c_key = attn.norm_added_k(c_key)
        query = torch.cat([query, c_query], dim=2)
        key = torch.cat([key, c_key], dim=2)
        value = torch.cat([value, c_value], dim=2)
    out = softmax_attention(query, key, value, head_dim**-0.5)
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
    image = attn.to_out[1](attn.to_out[0](out[:, :n_image])).contiguous()
    if context is None:
        return image
    text = out[:, n_image:]
    if not attn.context_pre_only:
        text = attn.to_add_out(text)
    return image, text.contiguous()


class JacobianSafeFluxProcessor:
    """FLUX.1's attention (``FluxAttention``: RMS-normed heads, text tokens first in the
    joint case, rotary position embedding) as explicit ``softmax(q k^T * scale) v`` with
    contiguous outputs; equal to diffusers' ``FluxAttnProcessor``."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Explicit softmax attention (forward-AD safe), same result as diffusers'."""
        from diffusers.models.embeddings import apply_rotary_emb

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, L, H*d] -> [B, L, H, d]
            return x.unflatten(-1, (-1, attn.head_dim))

        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))
        joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if joint:
            c_query = attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states)))
            c_key = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
            c_value = heads(attn.add_v_proj(encoder_hidden_states))
            query = torch.cat([c_query, query], dim=1)
            key = torch.cat([c_key, key], dim=1)
            value = torch.cat([c_value, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # [B, H, L, d]
        # a bool mask keeps the True keys; another is added (Chroma's pipeline passes 0/1)
        out = softmax_attention(query, key, value, attn.head_dim**-0.5, attention_mask)
        out = out.transpose(1, 2).flatten(2, 3)
        out = out.to(query.dtype)
        if encoder_hidden_states is None:
            return out.contiguous()
        n_text = encoder_hidden_states.shape[1]
        text, image = out[:, :n_text], out[:, n_text:]
        image = attn.to_out[1](attn.to_out[0](image.contiguous())).contiguous()
        return image, attn.to_add_out(text.contiguous()).contiguous()
