import math

import pytest
import torch

from vat3d.models.quantizer import MultiScaleVQ, default_scale_sizes, kmeans


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
    assert all(b <= a * 1.05 for a, b in zip(errors, errors[1:]))


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
        f_hat, nxt = vq.step(f_hat, k, idx[k])
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
