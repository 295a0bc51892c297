import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vat3d
from vat3d.models.quantizer import MultiScaleVQ, default_scale_sizes, kmeans, nearest_codes


def test_default_schedules_match_var():
    assert default_scale_sizes(256) == [1, 4, 9, 16, 25, 36, 64, 100, 169, 256]
    assert sum(default_scale_sizes(256)) == 680
    assert len(default_scale_sizes(576)) == 11 and default_scale_sizes(576)[-1] == 576
    assert len(default_scale_sizes(1024)) == 12 and default_scale_sizes(1024)[-1] == 1024
    assert default_scale_sizes(64, "1d") == [1, 2, 4, 8, 16, 32, 64]
    with pytest.raises(ValueError):
        default_scale_sizes(100 + 1)


@pytest.mark.parametrize("mode", ["2d", "1d"])
def test_residual_error_shrinks_with_scales_after_kmeans(mode):
    torch.manual_seed(0)
    vq = MultiScaleVQ(dim=4, codebook_size=128, num_latents=64, mode=mode, refine_ratio=0.0)
    # smooth latents: low-frequency fields are what coarse scales can capture
    grid = torch.linspace(-1, 1, 64)
    z = torch.stack([torch.sin(3 * grid + p) for p in torch.rand(8 * 4) * 6]).view(8, 4, 64).transpose(1, 2)
    vq.kmeans_init(z, iters=15)
    assert bool(vq.initialized)
    errors = [float((vq.indices_to_latent(vq.encode(z)[:k]) - z).square().mean().detach()) for k in range(1, vq.num_scales + 1)]
    assert errors[-1] < errors[0] * 0.5
    # the last 1d scales are within k-means noise of each other (~2e-3 MSE against 0.5 at scale 1)
    assert all(b <= a * 1.1 for a, b in zip(errors, errors[1:]))


def test_straight_through_gradient_and_losses():
    torch.manual_seed(0)
    vq = MultiScaleVQ(dim=8, codebook_size=32, num_latents=16)
    z = torch.randn(2, 16, 8, requires_grad=True)
    out, info = vq(z)
    assert out.shape == z.shape and len(info["indices"]) == vq.num_scales
    assert [i.shape[1] for i in info["indices"]] == vq.scale_sizes
    (out.sum() + info["loss"]).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert vq.codebook.weight.grad is not None  # the codebook term trains the codes


def test_prefix_and_step_agree_with_teacher_forcing_inputs():
    torch.manual_seed(0)
    vq = MultiScaleVQ(dim=8, codebook_size=32, num_latents=16).eval()
    idx = vq.encode(torch.randn(3, 16, 8))
    inputs = vq.next_scale_inputs(idx)
    assert inputs.shape == (3, sum(vq.scale_sizes[1:]), 8)
    f_hat, pieces = None, []
    for k in range(len(idx)):
        f_hat, nxt = vq.add_scale(f_hat, k, idx[k])
        if nxt is not None:
            pieces.append(nxt)
    torch.testing.assert_close(torch.cat(pieces, 1), inputs)
    torch.testing.assert_close(vq.from_grid(f_hat), vq.indices_to_latent(idx))


def test_dead_codes_are_restarted_on_residuals():
    torch.manual_seed(0)
    vq = MultiScaleVQ(dim=4, codebook_size=64, num_latents=16, dead_code_threshold=0.5, usage_decay=0.0)
    vq.codebook.weight.data[:] = 100.0  # all codes far away: only one ever wins
    vq.codebook.weight.data[0] = 0.0
    vq.train()
    vq(torch.randn(4, 16, 4))
    far = (vq.codebook.weight.abs() > 50).all(dim=1).sum()
    assert far < 64 - 1  # most far codes were moved onto real residuals
    _, info = vq(torch.randn(4, 16, 4))
    assert max(info["usage"]) > 1 / 64


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2) for c in centres])
    found = kmeans(x, 3, iters=20, generator=torch.Generator().manual_seed(1))
    dist = torch.cdist(centres, found).min(dim=1).values
    assert dist.max() < 0.5


def test_bits_per_token():
    assert MultiScaleVQ(dim=4, codebook_size=4096, num_latents=16).bits_per_token == 12
    assert MultiScaleVQ(dim=4, codebook_size=1000, num_latents=16).bits_per_token == math.ceil(math.log2(1000))


def test_straight_through_gradient_is_exactly_identity():
    # d(out)/dz = I: the decoder's gradient reaches the encoder unchanged (the VQ loss is left out)
    torch.manual_seed(0)
    vq = MultiScaleVQ(dim=8, codebook_size=32, num_latents=16).train()
    for num_scales in (None, 2):
        z = torch.randn(3, 16, 8, requires_grad=True)
        out, _ = vq(z, num_scales=num_scales)
        grad_out = torch.randn_like(out)
        out.backward(grad_out)
        assert torch.equal(z.grad, grad_out)
        assert not torch.equal(out.detach(), z.detach())  # quantized values, not z itself


def test_nearest_codes_in_chunks_equals_one_chunk():
    torch.manual_seed(0)
    x, codes = torch.randn(1000, 8), torch.randn(50, 8)
    dense = torch.cdist(x, codes).argmin(1)
    for max_elements in (1, 49, 50, 777, 10**9):  # one row per chunk, ..., everything at once
        assert torch.equal(nearest_codes(x, codes, max_elements=max_elements), dense)


def test_quantizer_computes_in_fp32_with_bf16_parameters():
    # FSDP's mixed precision hands the forward bf16 parameters; the quantizer still works in fp32
    torch.manual_seed(0)
    vq = MultiScaleVQ(dim=8, codebook_size=32, num_latents=16).eval()
    z = torch.randn(2, 16, 8)
    vq.kmeans_init(z, iters=3)
    vq_bf16 = copy.deepcopy(vq).to(torch.bfloat16)
    out, info = vq_bf16(z)
    assert out.dtype == torch.float32
    vq.load_state_dict({k: v.float() for k, v in vq_bf16.state_dict().items()})  # the same (rounded) values
    ref, ref_info = vq(z)
    torch.testing.assert_close(out, ref)
    assert all(torch.equal(a, b) for a, b in zip(info["indices"], ref_info["indices"]))


def test_deferred_dead_code_restarts_wait_for_apply():
    def run(defer: bool) -> MultiScaleVQ:
        torch.manual_seed(0)
        vq = MultiScaleVQ(dim=4, codebook_size=64, num_latents=16, dead_code_threshold=0.5, usage_decay=0.0)
        vq.defer_codebook_writes = defer
        with torch.no_grad():
            vq.codebook.weight[:] = 100.0
            vq.codebook.weight[0] = 0.0
        before = vq.codebook.weight.detach().clone()
        vq.train()(torch.randn(4, 16, 4))
        if defer:  # nothing written in the forward; the rows wait
            assert torch.equal(vq.codebook.weight, before) and vq.has_pending_codebook_update()
            assert vq.apply_pending_codebook_update()
        assert not vq.has_pending_codebook_update() and not vq.apply_pending_codebook_update()
        return vq

    deferred, immediate = run(True), run(False)
    assert torch.equal(deferred.codebook.weight, immediate.codebook.weight)
    assert (immediate.codebook.weight.abs() > 50).all(dim=1).sum() < 63
    assert "_pending_rows" not in str(list(immediate.state_dict()))


KMEANS_MEMORY_SCRIPT = r"""
import json, re, sys
import torch
from vat3d.models.quantizer import MultiScaleVQ

def kib(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

B, M, C, V, max_elements = map(int, sys.argv[1:])
vq = MultiScaleVQ(dim=C, codebook_size=V, num_latents=M)
# warm-up on a smaller pool through the same code paths (code pages, thread pools, allocator)
vq.kmeans_init(torch.randn(B // 4, M, C), iters=1, max_elements=max_elements)
pool = torch.randn(B, M, C)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = kib("VmRSS")
vq.kmeans_init(pool, iters=1, max_elements=max_elements)
print(json.dumps({"peak": kib("VmHWM") - base, "bound": vq.kmeans_memory_bound(B, max_elements)}))
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc to measure peak RSS")
def test_kmeans_init_memory_is_bounded(tmp_path):
    """Peak memory of k-means init, measured (peak RSS of a fresh process above its RSS before the call),
    stays within the bound the chunking guarantees, far below the (pool x V) distance matrix the
    unchunked assignment built. glibc's dynamic mmap threshold is pinned so that freed blocks go back
    to the system and RSS follows live memory; 8 MiB cover the allocator's own overhead."""
    B, M, C, V, max_elements = 1000, 64, 16, 512, 1 << 20  # 64k tokens, 155k samples over 7 scales
    script = tmp_path / "kmeans_memory.py"
    script.write_text(KMEANS_MEMORY_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(vat3d.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script), *map(str, (B, M, C, V, max_elements))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["peak"] <= result["bound"] + 8 * 2**20, result
    samples_bytes = B * sum(default_scale_sizes(M)) * C * 4
    assert result["peak"] >= samples_bytes  # the measurement sees the samples k-means runs on
    # the bound is the samples plus one chunk of distances: here under a fifth of one (pool tokens x V) fp32
    # distance matrix (22.8 MB against 131 MB); it grows with V only through the V x C centres and the seeding pool
    assert result["bound"] < (B * M * V * 4) / 5
