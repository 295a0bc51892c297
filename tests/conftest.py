import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_TOKENIZER = dict(
    num_latents=16, width=64, depth=2, heads=4, num_freqs=4, code_dim=8, codebook_size=64,
    decoder_width=64, decoder_depth=2, decoder_heads=4, plane_tokens=4, plane_resolution=16,
    plane_channels=8, mlp_hidden=32,
)


@pytest.fixture
def tiny_tokenizer_kwargs():
    return dict(TINY_TOKENIZER)


@pytest.fixture
def tiny_tokenizer():
    import torch

    from vat3d.models.tokenizer import VATokenizer

    torch.manual_seed(0)
    return VATokenizer(**TINY_TOKENIZER)
