"""Entropy coding of VAT tokens with a next-scale generator as the prior.

The generator, run unconditionally (a ``cond_type="none"`` model, or any conditional model with
its null condition), gives ``p(token | all earlier scales)`` for every token of a scale at once.
A range coder (``constriction.stream.queue.RangeEncoder``) then stores each token in about
``-log2 p`` bits instead of the fixed ``ceil(log2 V)``.

Layout of one shape: **one independently decodable range-coded chunk per scale** (the
``.vat`` file's entropy payloads), so a file cut after scale ``k`` still decodes scales
``0..k-1``: decoding scale ``k`` needs only the tokens of scales ``< k`` (to run the prior) and
chunk ``k``.  A chunk is the coder's 32-bit words written big-endian, cut to the shortest byte
string that still decodes to the same tokens when the decoder pads it with zero bytes (verified by
decoding; the coder's flush otherwise costs ~5 bytes per scale), so a near-certain scale may cost
0 bytes.

Determinism: encoder and decoder must compute *bit-identical* probabilities.  Both sides run
exactly the same code path (:class:`PriorStepper`): batch of one, one forward pass per scale
with the KV cache, float32 weights, autocast off, no grad, deterministic algorithms requested and
a single intra-op thread (CPU matmuls give thread-count-dependent floats).
The float32 logits are turned into probabilities in float64 numpy, mixed with a uniform floor
(``UNIFORM_FLOOR``; bounds the cost of an unlikely token to about ``log2 V + 10`` bits), and
constriction's ``Categorical(perfect=False)`` quantises them to its fixed-point (24-bit)
distribution, a deterministic function of the float64 input.  What must match between the
machine that encodes and the one that decodes is listed in ``docs/codec.md``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Sequence

import numpy as np
import torch

from vat3d.codec.fingerprint import model_fingerprint_bytes
from vat3d.codec.vatfile import (ENTROPY_FORMAT_VERSION, VatFormatError, VatHeader, crc8, decode_vat_payloads,
                                 encode_vat_payloads)

__all__ = [
    "UNIFORM_FLOOR",
    "PriorStepper",
    "check_generator",
    "decode_entropy_vat",
    "encode_entropy_vat",
    "entropy_bytes",
    "entropy_decode",
    "entropy_encode",
    "generator_fingerprint_bytes",
    "token_information",
]

UNIFORM_FLOOR = 2.0**-10  # p' = (1 - eps) p + eps / V


def generator_fingerprint_bytes(generator) -> bytes:

    return model_fingerprint_bytes(generator)  # cached until a weight changes


def _constriction():
    import constriction

    return constriction.stream


#: torch's intra-op thread count (and its deterministic-algorithms switch) are process-wide: coders in
#: several threads (a web app's requests) take turns, so none restores a setting another still needs.
_DETERMINISM_LOCK = threading.RLock()


@contextlib.contextmanager
def _deterministic():
    """no grad, no autocast, ONE intra-op thread (restored afterwards); on CUDA also deterministic kernels.

    The thread count matters: with 2 threads CPU matmuls split their work differently and the
    logits differ from the 1-thread ones in the 7th digit, enough to break decoding. The settings are
    process-wide, so the whole block holds :data:`_DETERMINISM_LOCK`.
    """
    with _DETERMINISM_LOCK, _deterministic_settings():
        yield


@contextlib.contextmanager
def _deterministic_settings():
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    cuda = torch.cuda.is_available()
    if cuda:  # CPU kernels of the prior are deterministic for a thread count; only CUDA needs the switch
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            if torch.cuda.is_available():
                with torch.autocast("cuda", enabled=False):
                    yield
            else:
                yield
    finally:
        if cuda:
            torch.use_deterministic_algorithms(previous, warn_only=warn_only)
        torch.set_num_threads(threads)


class PriorStepper:
    """The generator's prior, scale by scale: ``probs()`` for the current scale, then ``feed(tokens)``.

    Used identically by the encoder (feeding the true tokens) and the decoder (feeding the tokens
    it just decoded), so both see the same floats.
    """

    def __init__(self, generator):
        if next(generator.parameters()).dtype != torch.float32:
            raise ValueError("entropy coding needs a float32 generator (got "
                             f"{next(generator.parameters()).dtype})")
        generator.eval()
        self.g = generator
        self.k = 0
        self.f_hat = None
        self.kv_caches = [{} for _ in generator.blocks]
        cond_1CD = generator.condition(None, batch_size=1).float()
        self.x = torch.cat([cond_1CD, generator.start_tokens(1)], dim=1)
        self.mask = generator.sequence_mask(cond_1CD.shape[1], 1)

    @property
    def num_scales(self) -> int:
        return self.g.num_scales

    def probs(self) -> np.ndarray:
        """(n_k, V) float64 probabilities of the current scale's tokens (floored, rows sum to 1)."""
        g = self.g
        n_k = g.scale_sizes[self.k]
        hidden = g.backbone(self.x, self.mask, self.kv_caches)
        logits = g.logits(hidden[:, -n_k:])[0].float().cpu().numpy().astype(np.float64)
        if not np.isfinite(logits).all():
            raise ValueError(f"the generator produced non-finite logits at scale {self.k}")
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        V = p.shape[1]
        return (1.0 - UNIFORM_FLOOR) * p + UNIFORM_FLOOR / V

    def feed(self, tokens_n: np.ndarray) -> None:
        """Teacher-force this scale's tokens and prepare the next scale's inputs."""
        g = self.g
        if self.k + 1 < g.num_scales:
            device = g.head.weight.device
            idx = torch.as_tensor(np.asarray(tokens_n, dtype=np.int64), device=device).view(1, -1)
            self.f_hat, next_inputs = g.quantizer.add_scale(self.f_hat, self.k, idx)
            self.x = g.scale_tokens(self.k + 1, next_inputs.float())
            self.mask = None
        self.k += 1


def _scale_probs(generator, tokens_per_scale: Sequence) -> Iterator[np.ndarray]:
    """Probabilities of each given scale under the prior (teacher-forced with the given tokens)."""
    stepper = PriorStepper(generator)
    for tokens in tokens_per_scale:
        yield stepper.probs()
        stepper.feed(tokens)


def _check_tokens(generator, tokens_per_scale: Sequence) -> list[np.ndarray]:
    out = []
    if not 1 <= len(tokens_per_scale) <= generator.num_scales:
        raise ValueError(f"need 1..{generator.num_scales} scales of tokens, got {len(tokens_per_scale)}")
    for k, t in enumerate(tokens_per_scale):
        arr = np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t).reshape(-1)
        if arr.size != generator.scale_sizes[k]:
            raise ValueError(f"scale {k}: expected {generator.scale_sizes[k]} tokens, got {arr.size}")
        if arr.size and (arr.min() < 0 or arr.max() >= generator.codebook_size):
            raise ValueError(f"scale {k}: token outside [0, {generator.codebook_size})")
        out.append(arr.astype(np.int32))
    return out


def _words_to_bytes(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype=">u4").tobytes().rstrip(b"\0")


def _bytes_to_words(payload: bytes) -> np.ndarray:
    padded = bytes(payload) + b"\0" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def _decodes_to(stream, family, payload: bytes, probs: np.ndarray, tokens: np.ndarray) -> bool:
    try:
        decoder = stream.queue.RangeDecoder(_bytes_to_words(payload))
        return bool(np.array_equal(decoder.decode(family, probs), tokens))
    except (AssertionError, ValueError, RuntimeError):  # constriction: "invalid for the entropy model"
        return False


def _shortest_tail(stream, family, full: bytes, probs: np.ndarray, tokens: np.ndarray) -> bytes:
    """The shortest byte string the decoder turns back into ``tokens``.

    The coder's flush writes its whole 64-bit state; any number inside the final interval decodes
    the same. The decoder reads missing bytes as zeros, so a prefix of the code (rounded down) or
    the prefix with its last byte incremented (rounded up) often works: try both for increasing
    lengths, starting a little below the ideal length, and keep the first one that verifiably
    decodes. The full code is the fallback, so the result is always correct.
    """
    rows = np.arange(len(tokens))
    ideal_bytes = float(-np.log2(probs[rows, tokens]).sum()) / 8.0
    for length in range(max(0, int(ideal_bytes) - 1), len(full)):
        down = full[:length]
        candidates = [down]
        if length:
            up = bytearray(down)
            i = length - 1
            while i >= 0 and up[i] == 0xFF:
                up[i] = 0
                i -= 1
            if i >= 0:
                up[i] += 1
                candidates.append(bytes(up).rstrip(b"\0"))
        for candidate in candidates:
            if len(candidate) == length and candidate.endswith(b"\0"):
                continue  # same as a shorter candidate
            if _decodes_to(stream, family, candidate, probs, tokens):
                return candidate
    return full


def token_check(tokens: np.ndarray) -> int:
    """CRC-8 of one scale's token indices (as little-endian uint32): the byte each payload opens with."""
    return crc8(np.asarray(tokens, dtype="<u4").tobytes())


def entropy_encode(generator, tokens_per_scale: Sequence) -> list[bytes]:
    """Range-code each scale with the generator's prior; one independent payload per scale.

    ``tokens_per_scale[k]`` holds ``scale_sizes[k]`` indices (a prefix of the scales is fine).
    Every payload is verified by decoding it before it is returned, and opens with
    :func:`token_check` of its tokens, which the decoder compares with what it decoded: a decoder whose
    probabilities differ from the encoder's in the last bits gets an error, not wrong tokens.
    """
    stream = _constriction()
    tokens = _check_tokens(generator, tokens_per_scale)
    family = stream.model.Categorical(perfect=False)
    payloads = []
    with _deterministic():
        for tok, probs in zip(tokens, _scale_probs(generator, tokens)):
            encoder = stream.queue.RangeEncoder()
            encoder.encode(tok, family, probs)
            full = _words_to_bytes(encoder.get_compressed())
            if not _decodes_to(stream, family, full, probs, tok):  # pragma: no cover - coder invariant
                raise RuntimeError("range coder round trip failed")
            payloads.append(bytes([token_check(tok)]) + _shortest_tail(stream, family, full, probs, tok))
    return payloads


def entropy_decode(generator, payloads: Sequence[bytes], scale_sizes: Sequence[int] | None = None
                   ) -> list[np.ndarray]:
    """Inverse of :func:`entropy_encode`: decode the given (prefix of) scale payloads to int64 tokens."""
    stream = _constriction()
    if scale_sizes is not None and list(scale_sizes) != list(generator.scale_sizes):
        raise ValueError(f"scale schedule {list(scale_sizes)} does not match the generator's "
                         f"{list(generator.scale_sizes)}")
    if len(payloads) > generator.num_scales:
        raise ValueError(f"{len(payloads)} payloads for a {generator.num_scales}-scale generator")
    family = stream.model.Categorical(perfect=False)
    out: list[np.ndarray] = []
    with _deterministic():
        stepper = PriorStepper(generator)
        for payload in payloads:
            probs = stepper.probs()
            if not payload:
                raise ValueError(f"entropy payload of scale {stepper.k} is empty: it has no token check byte")
            try:
                decoder = stream.queue.RangeDecoder(_bytes_to_words(payload[1:]))
                tok = np.asarray(decoder.decode(family, probs), dtype=np.int64)
            except (AssertionError, ValueError, RuntimeError) as error:
                raise ValueError(f"entropy payload of scale {stepper.k} does not decode ({error}): the generator's "
                                 "probabilities differ from the encoder's (see docs/codec.md)") from None
            if token_check(tok) != payload[0]:
                raise ValueError(f"entropy payload of scale {stepper.k} decodes to tokens that fail their check: "
                                 "the generator's probabilities differ from the encoder's (see docs/codec.md)")
            out.append(tok)
            stepper.feed(tok)
    return out


def token_information(generator, tokens_per_scale: Sequence) -> list[float]:
    """Ideal code length in bits (sum of ``-log2 p``) of each scale under the (floored) prior."""
    tokens = _check_tokens(generator, tokens_per_scale)
    bits = []
    with _deterministic():
        for tok, probs in zip(tokens, _scale_probs(generator, tokens)):
            bits.append(float(-np.log2(probs[np.arange(len(tok)), tok]).sum()))
    return bits


# ---------------------------------------------------------------------------- .vat files


def check_generator(generator, model_fingerprint: bytes, scale_sizes: Sequence[int], codebook_size: int) -> None:
    """Refuse a generator built for another tokenizer (the message names both fingerprints)."""
    expected = generator.config.get("tokenizer_fingerprint")
    # ``model_fingerprint`` may be the 4 bytes a .vat file keeps: compare the common prefix.
    common = min(len(bytes(model_fingerprint)), len(expected or "") // 2)
    if expected is not None and bytes.fromhex(expected)[:common] != bytes(model_fingerprint)[:common]:
        raise ValueError(f"generator {generator.fingerprint()} was trained on tokenizer {expected}, but the tokens "
                         f"come from tokenizer {bytes(model_fingerprint).hex()}")
    if list(scale_sizes) != list(generator.scale_sizes) or int(codebook_size) != generator.codebook_size:
        raise ValueError(f"the generator's schedule {generator.scale_sizes} / V={generator.codebook_size} does not "
                         f"fit the tokens ({list(scale_sizes)} / V={codebook_size})")


def _entropy_header(generator, num_payloads: int, model_fingerprint, codebook_size, scale_sizes, center, scale,
                    orientation: int = 0):
    return VatHeader(model_fingerprint=model_fingerprint, codebook_size=codebook_size,
                     scale_sizes=tuple(scale_sizes), center=tuple(center), scale=scale, coding="entropy",
                     generator_fingerprint=generator_fingerprint_bytes(generator), num_scales_stored=num_payloads,
                     version=ENTROPY_FORMAT_VERSION, orientation=orientation)


def encode_entropy_vat(generator, tokens_per_scale: Sequence, *, model_fingerprint: bytes, codebook_size: int,
                       scale_sizes: Sequence[int], center=(0.0, 0.0, 0.0), scale: float = 1.0,
                       orientation: int = 0) -> bytes:
    """Entropy-coded ``.vat`` bytes (the header records the generator's fingerprint)."""
    check_generator(generator, model_fingerprint, scale_sizes, codebook_size)
    payloads = entropy_encode(generator, tokens_per_scale)
    header = _entropy_header(generator, len(payloads), model_fingerprint, codebook_size, scale_sizes, center, scale,
                             orientation)
    return encode_vat_payloads(header, payloads)


def decode_entropy_vat(generator, data: bytes, *, expected_fingerprint: bytes | None = None,
                       max_scales: int | None = None):
    """Decode entropy-coded ``.vat`` bytes -> ``(header, tokens, complete)``.

    A file whose recorded generator differs from ``generator`` raises
    :class:`~vat3d.codec.vatfile.VatModelMismatch` naming both fingerprints; a file of another
    tokenizer than ``expected_fingerprint`` too.
    """
    parsed = decode_vat_payloads(data, expected_fingerprint=expected_fingerprint,
                                 expected_generator_fingerprint=generator_fingerprint_bytes(generator),
                                 max_scales=max_scales)
    h = parsed.header
    if h.coding != "entropy":
        raise ValueError("not an entropy-coded .vat file")
    if h.version < ENTROPY_FORMAT_VERSION:
        raise VatFormatError("this entropy-coded .vat file predates per-scale token checks (an earlier vat3d "
                             "wrote it): its tokens cannot be verified; encode the mesh again")
    check_generator(generator, h.model_fingerprint, h.scale_sizes, h.codebook_size)
    tokens = entropy_decode(generator, parsed.payloads, h.scale_sizes)
    return h, tokens, parsed.complete


def entropy_bytes(generator, tokenizer, shape) -> dict:
    """Sizes of one encoded shape with and without entropy coding (for ``vat3d eval --entropy``).

    Keys: ``entropy_bytes`` (the entropy-coded file), ``entropy_bits_per_token`` (its payload bits
    per token), ``entropy_ideal_bits_per_token`` (the prior's ``-log2 p``), ``entropy_raw_bits_per_token``
    (fixed width ``ceil(log2 V)``) and ``entropy_raw_bytes`` (the raw file).
    """

    fp = model_fingerprint_bytes(tokenizer)
    check_generator(generator, fp, tokenizer.scale_sizes, tokenizer.codebook_size)
    n = int(sum(len(t) for t in shape.tokens))
    payloads = entropy_encode(generator, shape.tokens)
    header = _entropy_header(generator, len(payloads), fp, tokenizer.codebook_size, tokenizer.scale_sizes,
                             shape.transform.center, shape.transform.scale, shape.transform.orientation)
    data = encode_vat_payloads(header, payloads)
    info = sum(token_information(generator, shape.tokens))
    return {"entropy_bytes": len(data), "entropy_bits_per_token": 8.0 * sum(map(len, payloads)) / n,
            "entropy_ideal_bits_per_token": info / n,
            "entropy_raw_bits_per_token": float(max(1, math.ceil(math.log2(tokenizer.codebook_size)))),
            "entropy_raw_bytes": shape.num_bytes}
