"""Stage 2: a VAR-style next-scale autoregressive transformer over VAT tokens.

The sequence, for K scales of n_1 ... n_K tokens (N = sum n_k) and n_cond condition tokens::

    [ condition tokens (n_cond) ][ start (n_1) ][ scale-2 inputs (n_2) ] ... [ scale-K inputs (n_K) ]
                                   predicts 1     predicts scale 2            predicts scale K

* condition tokens come from a :mod:`~vat3d.models.conditioners` conditioner (already width D);
* the n_1 start positions hold one learned start token (plus position and level embeddings);
* the input at scale k > 1 is the running sum of the code vectors of scales 1..k-1 (bicubic-upsampled
  and refined, as the tokenizer decodes them), area-downsampled to n_k tokens: exactly what the
  tokenizer's quantizer computes (:meth:`MultiScaleVQ.next_scale_inputs` / :meth:`MultiScaleVQ.step`),
  projected from the code dim C to D, plus a learned position embedding and a level (scale) embedding.

The generator owns a **frozen copy** of the tokenizer's quantizer (codebook + refiners), so a saved
generator is self-contained: :meth:`NextScaleGenerator.from_tokenizer` copies it and records the
tokenizer's fingerprint in the config.

Attention is block-causal: a token sees every condition token, every token of earlier scales and
the tokens of its own scale; condition tokens see each other only. Training is cross-entropy over
all N positions (per-scale losses are reported too); with probability ``cond_dropout`` a sample's
condition is replaced by the conditioner's learned null tokens (for classifier-free guidance).
Sampling lives in :mod:`vat3d.models.sampling` (:meth:`NextScaleGenerator.generate`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vat3d.models.conditioners import DEFAULT_TEXT_ENCODER, Conditioner, build_conditioner
from vat3d.models.hub import ModelMixin, register_to_config
from vat3d.models.modules import Block, run_blocks
from vat3d.models.quantizer import MultiScaleVQ, Refiner
from vat3d.models.sampling import generate as sample_tokens

CONDITION_LEVEL = -1  # the level of condition tokens in the block-causal mask

# Keys of the config that describe the tokenizer's quantizer (copied by from_tokenizer).
TOKENIZER_KEYS = ("num_latents", "scale_sizes", "scale_mode", "codebook_size", "code_dim", "refine_ratio")


# Logits made at once by the training loss: 2^24 (64 MiB in fp32) whatever B, N and V.
LOSS_CHUNK_ELEMENTS = 1 << 24


def _head_cross_entropy(hidden_BnD: torch.Tensor, weight_VD: torch.Tensor, bias_V: torch.Tensor | None,
                        target_Bn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits_BnV = F.linear(hidden_BnD, weight_VD, bias_V)
    ce_Bn = F.cross_entropy(logits_BnV.float().transpose(1, 2), target_Bn, reduction="none")
    return ce_Bn, logits_BnV.argmax(-1) == target_Bn


def chunked_cross_entropy(hidden_BND: torch.Tensor, head: nn.Linear, target_BN: torch.Tensor,
                          max_elements: int = LOSS_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy (B, N) in fp32 and whether the argmax is right (B, N), of
    ``head(hidden)`` against ``target``, without the whole (B, N, V) logits.

    Positions go in chunks of at most ``max_elements`` logits; each chunk's logits are recomputed in
    the backward pass (activation checkpointing of the head), so the peak is one chunk's logits and
    their fp32 softmax. With one chunk it is the plain computation.
    """
    B, N, _ = hidden_BND.shape
    V = head.out_features
    step = max(1, max_elements // max(1, B * V))
    if step >= N:
        return _head_cross_entropy(hidden_BND, head.weight, head.bias, target_BN)
    from torch.utils.checkpoint import checkpoint

    ce, correct = [], []
    for lo in range(0, N, step):
        ce_Bn, correct_Bn = checkpoint(_head_cross_entropy, hidden_BND[:, lo:lo + step], head.weight, head.bias,
                                       target_BN[:, lo:lo + step], use_reentrant=False)
        ce.append(ce_Bn)
        correct.append(correct_Bn)
    return torch.cat(ce, dim=1), torch.cat(correct, dim=1)


def block_causal_mask(query_levels_L: torch.Tensor, key_levels_S: torch.Tensor) -> torch.Tensor:
    """Boolean (L, S) attention mask, True where query i may attend key j: level(j) <= level(i)."""
    return key_levels_S.unsqueeze(0) <= query_levels_L.unsqueeze(1)


class NextScaleGenerator(ModelMixin):
    """Decoder-only next-scale prediction transformer (see the module docstring).

    Args:
        width, depth, heads, mlp_ratio, qk_norm, dropout: transformer size (``dropout`` applies to
            attention weights and MLP outputs).
        cond_type: ``"none"``, ``"class"``, ``"text"``, ``"image"`` or ``"text+image"`` (one model for
            text, image and text+image prompts; conditions ``{"text": ..., "image": ...}``).
        num_classes, class_names: class conditioning (names are optional; they map to ids).
        cond_dropout: probability of replacing a training sample's condition by the null condition.
        text_encoder: sentence-transformers encoder for ``cond_type="text"`` (frozen, not saved).
        image_encoder: ``"conv"``, ``"dinov2:<path>"`` or ``"clip:<path>"`` for ``cond_type="image"``.
        conditioner_kwargs: further options of the conditioner (e.g. ``num_tokens``, ``grid``).
        num_latents, scale_sizes, scale_mode, codebook_size, code_dim, refine_ratio: the tokenizer's
            quantizer, rebuilt (frozen) inside the generator; filled in by :meth:`from_tokenizer`.
        tokenizer_fingerprint: the fingerprint of the tokenizer whose tokens this model generates.
        init_std: std of the normal init of linear layers and embeddings.
        gradient_checkpointing: recompute block activations in the backward pass.
    """

    @register_to_config
    def __init__(
        self,
        *,
        width: int = 384,
        depth: int = 8,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        dropout: float = 0.0,
        cond_type: str = "class",
        num_classes: int = 1,
        class_names: Sequence[str] | None = None,
        cond_dropout: float = 0.1,
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        image_encoder: str = "conv",
        conditioner_kwargs: dict[str, Any] | None = None,
        num_latents: int = 256,
        scale_sizes: Sequence[int] | None = None,
        scale_mode: str = "2d",
        codebook_size: int = 4096,
        code_dim: int = 32,
        refine_ratio: float = 0.5,
        tokenizer_fingerprint: str | None = None,
        init_std: float = 0.02,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
        if class_names is not None and num_classes == 1:
            num_classes = len(class_names)
        self.width, self.cond_dropout = width, cond_dropout
        self.gradient_checkpointing = gradient_checkpointing

        # --- the tokenizer's quantizer: a frozen copy, part of the saved state ---
        self.quantizer = MultiScaleVQ(code_dim, codebook_size, num_latents, scale_mode, scale_sizes,
                                      refine_ratio=refine_ratio, dead_code_threshold=0.0)
        self.quantizer.requires_grad_(False)
        self.quantizer.eval()
        self.scale_sizes: list[int] = list(self.quantizer.scale_sizes)
        self.codebook_size = codebook_size
        K, N = len(self.scale_sizes), sum(self.scale_sizes)
        offsets = [0]
        for n in self.scale_sizes:
            offsets.append(offsets[-1] + n)
        self.offsets: list[int] = offsets  # scale k occupies positions offsets[k]:offsets[k+1]
        levels_N = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(self.scale_sizes)])
        self.register_buffer("levels_N", levels_N, persistent=False)

        # --- condition prefix ---
        self.conditioner: Conditioner = build_conditioner(
            cond_type, width, num_classes=num_classes, class_names=class_names, text_encoder=text_encoder,
            image_encoder=image_encoder, **(conditioner_kwargs or {}))

        # --- token inputs: start token, code-vector projection, position and level embeddings ---
        self.start_11D = nn.Parameter(torch.zeros(1, 1, width))
        self.input_proj = nn.Linear(code_dim, width)
        self.pos_1ND = nn.Parameter(torch.zeros(1, N, width))
        self.level_embed = nn.Embedding(K, width)

        # --- transformer and head ---
        self.blocks = nn.ModuleList(
            [Block(width, heads, mlp_ratio, qk_norm=qk_norm, dropout=dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codebook_size)
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        for name, module in self.named_modules():
            if name.startswith(("quantizer", "conditioner.encoder", "conditioner.image.encoder")):
                continue
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)
        for param in (self.start_11D, self.pos_1ND):
            nn.init.trunc_normal_(param, std=std)

    # ---- construction from a tokenizer ------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer: nn.Module, **kwargs: Any) -> "NextScaleGenerator":
        """A generator for ``tokenizer``'s tokens, owning a frozen copy of its quantizer.

        ``kwargs`` are the generator's other knobs (width, depth, cond_type, ...). Quantizer keys
        (scale sizes, codebook size, ...) are taken from the tokenizer; passing a different value
        is an error.
        """
        q: MultiScaleVQ = tokenizer.quantizer
        refiner = q.refiners[0]
        derived = {
            "num_latents": q.num_latents,
            "scale_sizes": list(q.scale_sizes),
            "scale_mode": q.mode,
            "codebook_size": q.codebook_size,
            "code_dim": q.dim,
            "refine_ratio": float(refiner.ratio) if isinstance(refiner, Refiner) else 0.0,
            "tokenizer_fingerprint": tokenizer.fingerprint(),
        }
        for key in TOKENIZER_KEYS:
            given = kwargs.get(key)
            if given is not None and (list(given) if key == "scale_sizes" else given) != derived[key]:
                raise ValueError(f"{key}={given!r} disagrees with the tokenizer's {derived[key]!r}")
        model = cls(**{**kwargs, **derived})
        model.quantizer.load_state_dict(q.state_dict(), strict=True)
        return model

    def check_tokenizer(self, tokenizer: nn.Module) -> None:
        """Raise if ``tokenizer`` is not the one this generator was built for."""
        expected = self.config.get("tokenizer_fingerprint")
        got = tokenizer.fingerprint()
        if expected is not None and expected != got:
            raise ValueError(f"generator was trained on tokenizer {expected}, got tokenizer {got}")
        if list(tokenizer.scale_sizes) != self.scale_sizes or tokenizer.codebook_size != self.codebook_size:
            raise ValueError("tokenizer scale schedule / codebook size differ from the generator's")

    # ---- bookkeeping ------------------------------------------------------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.scale_sizes)

    @property
    def num_tokens(self) -> int:
        return self.offsets[-1]

    def train(self, mode: bool = True) -> "NextScaleGenerator":
        super().train(mode)
        self.quantizer.eval()  # frozen: no usage tracking, no dead-code restarts
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should see (the quantizer copy is frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    def sequence_levels(self, n_cond: int, num_scales: int | None = None) -> torch.Tensor:
        """Level of every position of [condition][scales 1..num_scales]: -1 for the condition."""
        K = self.num_scales if num_scales is None else num_scales
        cond_levels = torch.full((n_cond,), CONDITION_LEVEL, dtype=torch.long, device=self.levels_N.device)
        return torch.cat([cond_levels, self.levels_N[: self.offsets[K]]])

    def sequence_mask(self, n_cond: int, num_scales: int | None = None) -> torch.Tensor:
        """The (L, L) block-causal mask of [condition][scales 1..num_scales]."""
        levels_L = self.sequence_levels(n_cond, num_scales)
        return block_causal_mask(levels_L, levels_L)

    # ---- conditions -------------------------------------------------------------------------------
    def condition(self, conditions: Any = None, batch_size: int | None = None) -> torch.Tensor:
        """Condition tokens (B, n_cond, D); for ``cond_type="none"`` pass ``batch_size``."""
        if self.config["cond_type"] == "none":
            return self.conditioner(batch_size if conditions is None else conditions)
        if conditions is None:
            if batch_size is None:
                raise ValueError("pass conditions (or batch_size for the null condition)")
            return self.conditioner.null(batch_size)
        return self.conditioner(conditions)

    def drop_condition(self, cond_BCD: torch.Tensor) -> torch.Tensor:
        """Replace each sample's condition by the null condition with probability ``cond_dropout``."""
        if not self.training or self.cond_dropout <= 0:
            return cond_BCD
        B = cond_BCD.shape[0]
        drop_B11 = (torch.rand(B, 1, 1, device=cond_BCD.device) < self.cond_dropout)
        return torch.where(drop_B11, self.conditioner.null(B).to(cond_BCD.dtype), cond_BCD)

    # ---- token inputs -----------------------------------------------------------------------------
    def start_tokens(self, batch_size: int) -> torch.Tensor:
        """The inputs of the n_1 start positions (B, n_1, D); they predict scale 1."""
        n1 = self.scale_sizes[0]
        x_1nD = self.start_11D + self.pos_1ND[:, :n1] + self.level_embed.weight[0]
        return x_1nD.expand(batch_size, -1, -1)

    def scale_tokens(self, k: int, inputs_BnC: torch.Tensor) -> torch.Tensor:
        """Scale k's inputs (k >= 1): code-space inputs (B, n_k, C) -> (B, n_k, D)."""
        lo, hi = self.offsets[k], self.offsets[k + 1]
        x_BnD = self.input_proj(inputs_BnC.to(self.input_proj.weight.dtype))
        return x_BnD + self.pos_1ND[:, lo:hi] + self.level_embed.weight[k]

    def teacher_inputs(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing inputs (B, sum n_k, D) for the first len(indices) scales of tokens."""
        B, K = indices[0].shape[0], len(indices)
        parts = [self.start_tokens(B)]
        if K > 1:
            with torch.no_grad(), torch.autocast(indices[0].device.type, enabled=False):
                inputs_BMC = self.quantizer.next_scale_inputs(list(indices)).float()
            lo = self.offsets[1]
            x_BMD = self.input_proj(inputs_BMC.to(self.input_proj.weight.dtype))
            x_BMD = x_BMD + self.pos_1ND[:, lo:self.offsets[K]] + self.level_embed(self.levels_N[lo:self.offsets[K]])
            parts.append(x_BMD)
        return torch.cat(parts, dim=1)

    # ---- transformer ------------------------------------------------------------------------------
    def backbone(self, x_BLD: torch.Tensor, attn_mask: torch.Tensor | None = None,
                 kv_caches: list[dict] | None = None) -> torch.Tensor:
        """Run the blocks; ``kv_caches`` (one dict per block) append this chunk's keys/values."""
        if kv_caches is not None:
            for block, cache in zip(self.blocks, kv_caches):
                x_BLD = block(x_BLD, attn_mask=attn_mask, kv_cache=cache)
            return x_BLD
        ckpt = self.gradient_checkpointing and self.training
        return run_blocks(self.blocks, x_BLD, checkpointing=ckpt, attn_mask=attn_mask)

    def logits(self, hidden_BLD: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(hidden_BLD))

    def hidden_states(self, cond_BCD: torch.Tensor, x_BLD: torch.Tensor) -> torch.Tensor:
        """Normalised final hidden states (B, L, D) of token inputs ``x_BLD`` covering the first k scales
        (L = n_1+..+n_k): what the head turns into logits."""
        L = x_BLD.shape[1]
        if L not in self.offsets[1:]:
            raise ValueError(f"{L} inputs do not end at a scale boundary {self.offsets[1:]}")
        num_scales = self.offsets.index(L)
        n_cond = cond_BCD.shape[1]
        mask_LL = self.sequence_mask(n_cond, num_scales)
        hidden = self.backbone(torch.cat([cond_BCD.to(x_BLD.dtype), x_BLD], dim=1), mask_LL)
        return self.norm(hidden[:, n_cond:])

    def forward_embeddings(self, cond_BCD: torch.Tensor, x_BLD: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V) for token inputs ``x_BLD`` covering the first k scales (L = n_1+..+n_k)."""
        return self.head(self.hidden_states(cond_BCD, x_BLD))

    def _teacher_hidden(self, indices: Sequence[torch.Tensor], conditions: Any = None,
                        cond_BCD: torch.Tensor | None = None) -> torch.Tensor:
        self._check_indices(indices)
        B = indices[0].shape[0]
        if cond_BCD is None:
            cond_BCD = self.drop_condition(self.condition(conditions, batch_size=B))
        return self.hidden_states(cond_BCD, self.teacher_inputs(indices))

    def forward(self, indices: Sequence[torch.Tensor], conditions: Any = None,
                cond_BCD: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, sum n_k, V) for ground-truth tokens of the first k scales.

        ``conditions`` go through the conditioner (and condition dropout in training);
        ``cond_BCD`` gives condition tokens directly instead.
        """
        return self.head(self._teacher_hidden(indices, conditions, cond_BCD))

    def loss(self, indices: Sequence[torch.Tensor], conditions: Any = None,
             max_logit_elements: int = LOSS_CHUNK_ELEMENTS) -> dict[str, torch.Tensor]:
        """Cross-entropy over all positions, plus per-scale losses and accuracies (detached).

        The logits never exist whole: :func:`chunked_cross_entropy` makes at most ``max_logit_elements``
        of them at a time (and again in the backward pass), so V = 16384 over a few thousand positions
        needs megabytes, not the gigabytes of a (B, N, V) fp32 tensor.
        """
        hidden_BND = self._teacher_hidden(indices, conditions)
        target_BN = torch.cat(list(indices), dim=1)
        ce_BN, correct_BN = chunked_cross_entropy(hidden_BND, self.head, target_BN, max_logit_elements)
        correct_BN = correct_BN.float()
        bounds = self.offsets[: len(indices) + 1]
        scale_loss_K = torch.stack([ce_BN[:, lo:hi].mean() for lo, hi in zip(bounds[:-1], bounds[1:])])
        scale_acc_K = torch.stack([correct_BN[:, lo:hi].mean() for lo, hi in zip(bounds[:-1], bounds[1:])])
        return {"loss": ce_BN.mean(), "scale_loss": scale_loss_K.detach(), "accuracy": correct_BN.mean(),
                "scale_accuracy": scale_acc_K}

    @torch.no_grad()
    def log_likelihood(self, indices: Sequence[torch.Tensor], conditions: Any = None,
                       cond_BCD: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probability (B,) in nats of whole token sequences (the first k scales) under the model,
        given ``conditions`` (or condition tokens ``cond_BCD``; neither: the null condition). No
        condition dropout, no guidance: the model's own conditional distribution."""
        self._check_indices(indices)
        if cond_BCD is None:
            cond_BCD = self.condition(conditions, batch_size=indices[0].shape[0])
        hidden_BND = self.hidden_states(cond_BCD, self.teacher_inputs(indices))
        ce_BN, _ = chunked_cross_entropy(hidden_BND, self.head, torch.cat(list(indices), dim=1))
        return -ce_BN.sum(dim=1)

    def _check_indices(self, indices: Sequence[torch.Tensor]) -> None:
        if not 1 <= len(indices) <= self.num_scales:
            raise ValueError(f"need 1..{self.num_scales} scales of tokens, got {len(indices)}")
        for k, idx in enumerate(indices):
            if idx.ndim != 2 or idx.shape[1] != self.scale_sizes[k]:
                raise ValueError(f"scale {k} tokens must be (B, {self.scale_sizes[k]}), got {tuple(idx.shape)}")

    # ---- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, conditions: Any = None, **kwargs: Any) -> list[torch.Tensor]:
        """Sample per-scale tokens; see :func:`vat3d.models.sampling.generate` for the options."""
        return sample_tokens(self, conditions, **kwargs)
