"""Next-scale sampling for :class:`~vat3d.models.generator.NextScaleGenerator`.

One forward pass per scale with a KV cache: the first pass runs [condition][start] (block-causal
inside the chunk), every later pass runs only the new scale's n_k input tokens, which may attend to
everything cached. ``use_cache=False`` recomputes the whole prefix at every scale instead (the
reference the cache is tested against).

Classifier-free guidance runs the conditional and unconditional (null-condition) halves as one
doubled batch and mixes the logits as ``cond + (s - 1) * (cond - uncond)``: s = 1 gives the
conditional logits exactly. ``cfg_schedule="linear"`` raises s from 1 at the first scale to
``cfg_scale`` at the last (VAR's schedule, up to its offset of one); ``"constant"`` uses
``cfg_scale`` at every scale.

Tokens are drawn from ``softmax(logits / temperature)`` after optional top-k and top-p (nucleus)
filtering; ``temperature=0`` is greedy argmax.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def cfg_scales(cfg_scale: float, schedule: str, num_scales: int) -> list[float]:
    """Guidance scale per scale index: constant, or rising linearly from 1 to ``cfg_scale``."""
    if schedule == "constant":
        return [float(cfg_scale)] * num_scales
    if schedule == "linear":
        if num_scales == 1:
            return [float(cfg_scale)]
        return [1.0 + (cfg_scale - 1.0) * k / (num_scales - 1) for k in range(num_scales)]
    raise ValueError(f"unknown cfg_schedule {schedule!r} (use 'constant' or 'linear')")


def filter_logits(logits_BnV: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / the top-p probability mass to -inf (0 / 1.0 disable them)."""
    V = logits_BnV.shape[-1]
    if 0 < top_k < V:
        kth_Bn1 = torch.topk(logits_BnV, top_k, dim=-1).values[..., -1:]
        logits_BnV = logits_BnV.masked_fill(logits_BnV < kth_Bn1, float("-inf"))
    if top_p < 1.0:
        sorted_BnV, order_BnV = torch.sort(logits_BnV, dim=-1, descending=True)
        probs_BnV = sorted_BnV.softmax(dim=-1)
        mass_before_BnV = probs_BnV.cumsum(dim=-1) - probs_BnV  # mass of the strictly better tokens
        remove_sorted = mass_before_BnV > top_p  # the best token is always kept
        remove_BnV = torch.zeros_like(remove_sorted).scatter(-1, order_BnV, remove_sorted)
        logits_BnV = logits_BnV.masked_fill(remove_BnV, float("-inf"))
    return logits_BnV


def sample_from_logits(logits_BnV: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Token ids (B, n) from logits (B, n, V); ``temperature <= 0`` is greedy argmax."""
    if temperature <= 0:
        return logits_BnV.argmax(dim=-1)
    logits_BnV = filter_logits(logits_BnV.float() / temperature, top_k, top_p)
    probs_XV = logits_BnV.softmax(dim=-1).reshape(-1, logits_BnV.shape[-1])
    return torch.multinomial(probs_XV, 1, generator=generator).view(logits_BnV.shape[:-1])


@torch.no_grad()
def generate(
    model: nn.Module,  # a NextScaleGenerator: this module only calls its methods (it imports nothing above it)
    conditions: Any = None,
    *,
    batch_size: int | None = None,
    cfg_scale: float = 1.0,
    cfg_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    num_scales: int | None = None,
    dtype: torch.dtype | None = None,
    guidance_batch: bool | None = None,
    return_logits: bool = False,
) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Sample tokens scale by scale; returns a list of (B, n_k) int64 tensors (decodable by the
    tokenizer's ``decode_tokens`` / ``occupancy_fn``).

    Args:
        model: the generator (switched to eval mode for the call).
        conditions: a batch of conditions (labels, captions, images); None with ``batch_size``
            samples unconditionally (the null condition, or the "none" conditioner's token).
        cfg_scale, cfg_schedule: classifier-free guidance (1 = none), constant or linear in k.
        temperature, top_k, top_p: sampling; temperature 0 is greedy.
        seed / generator: randomness (``seed`` makes a fresh ``torch.Generator``).
        use_cache: one forward pass per scale with a KV cache (False: recompute the prefix).
        num_scales: stop after this many scales (a coarse prefix).
        dtype: run the transformer under autocast to this dtype (e.g. ``torch.bfloat16``).
        guidance_batch: force (True) or forbid (False) the doubled CFG batch; default: used
            whenever some scale's guidance differs from 1.
        return_logits: also return the (guided, pre-temperature) logits per scale, (B, n_k, V).
    """
    was_training = model.training
    model.eval()
    try:
        return _generate(model, conditions, batch_size, cfg_scale, cfg_schedule, temperature, top_k, top_p,
                         seed, generator, use_cache, num_scales, dtype, guidance_batch, return_logits)
    finally:
        model.train(was_training)


def _generate(model, conditions, batch_size, cfg_scale, cfg_schedule, temperature, top_k, top_p, seed,
              generator, use_cache, num_scales, dtype, guidance_batch, return_logits):
    device = model.head.weight.device
    K = model.num_scales if num_scales is None else num_scales
    if not 1 <= K <= model.num_scales:
        raise ValueError(f"num_scales must lie in 1..{model.num_scales}, got {K}")
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    guidance_K = cfg_scales(cfg_scale, cfg_schedule, model.num_scales)[:K]
    guided = any(s != 1.0 for s in guidance_K) if guidance_batch is None else guidance_batch
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())

    cond_BCD = model.condition(conditions, batch_size=batch_size)
    B, n_cond = cond_BCD.shape[0], cond_BCD.shape[1]
    if guided:
        cond_BCD = torch.cat([cond_BCD, model.conditioner.null(B).to(cond_BCD.dtype)], dim=0)
    B2 = cond_BCD.shape[0]  # 2B with guidance

    kv_caches = [{} for _ in model.blocks] if use_cache else None
    chunks = [cond_BCD, model.start_tokens(B2)]  # every input so far; the cache path feeds only new ones
    f_hat, tokens, all_logits = None, [], []
    for k in range(K):
        n_k = model.scale_sizes[k]
        with autocast:
            if use_cache:
                if k == 0:  # [condition][start]: block-causal within the chunk
                    x_BLD, mask = torch.cat(chunks, dim=1), model.sequence_mask(n_cond, 1)
                else:  # a new scale sees all cached keys and itself: no mask needed
                    x_BLD, mask = chunks[-1], None
                hidden_BLD = model.backbone(x_BLD, mask, kv_caches)
            else:
                mask = model.sequence_mask(n_cond, k + 1)
                hidden_BLD = model.backbone(torch.cat(chunks, dim=1), mask)
            logits_BnV = model.logits(hidden_BLD[:, -n_k:]).float()
        if guided:
            cond_logits, uncond_logits = logits_BnV.chunk(2, dim=0)
            logits_BnV = cond_logits + (guidance_K[k] - 1.0) * (cond_logits - uncond_logits)
        idx_Bn = sample_from_logits(logits_BnV, temperature, top_k, top_p, generator)
        tokens.append(idx_Bn)
        if return_logits:
            all_logits.append(logits_BnV)
        if k + 1 < K:
            with torch.autocast(device.type, enabled=False):
                f_hat, next_inputs_BnC = model.quantizer.add_scale(f_hat, k, idx_Bn)
            x_next = model.scale_tokens(k + 1, next_inputs_BnC.float())
            chunks.append(torch.cat([x_next, x_next], dim=0) if guided else x_next)
    return (tokens, all_logits) if return_logits else tokens
