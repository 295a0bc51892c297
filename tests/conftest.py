import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread per test process: `make test` runs two processes (pytest-xdist) on a 2-core machine, and
# tiny models spend more in OpenMP spin-waits than in arithmetic when their threads compete for cores
# (measured: a tiny tokenizer step took 0.65 s with one thread and 1.27 s with two on a busy machine).
# Set before torch or numpy is imported; subprocesses inherit it.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
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
