import json

import pytest
import torch

from vat3d.models.tokenizer import VATokenizer


def _batch(B=2, N=128, Q=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(B, N, 3, generator=g), dim=-1)
    return normals * 0.5, normals, torch.rand(B, Q, 3, generator=g) * 2 - 1


def test_forward_shapes_and_losses(tiny_tokenizer):
    pts, nrm, q = _batch()
    out = tiny_tokenizer(pts, nrm, q)
    assert out["logits"].shape == (2, 64)
    assert out["kl"].ndim == 0 and out["vq_loss"].ndim == 0
    assert [t.shape for t in out["indices"]] == [(2, n) for n in tiny_tokenizer.scale_sizes]
    cont = tiny_tokenizer(pts, nrm, q, quantize=False)
    assert float(cont["vq_loss"]) == 0.0


def test_tokens_deterministic_in_eval_mode(tiny_tokenizer):
    pts, nrm, _ = _batch()
    tiny_tokenizer.eval()
    a, b = tiny_tokenizer.encode(pts, nrm), tiny_tokenizer.encode(pts, nrm)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(t.dtype == torch.int64 and int(t.max()) < tiny_tokenizer.codebook_size for t in a)


def test_save_load_identical_tokens_and_logits(tiny_tokenizer, tmp_path):
    pts, nrm, q = _batch()
    tiny_tokenizer.quantizer.kmeans_init(tiny_tokenizer.posterior(pts, nrm)["z"].detach())
    tiny_tokenizer.eval()
    tokens = tiny_tokenizer.encode(pts, nrm)
    logits = tiny_tokenizer.decode_tokens(tokens, q)
    tiny_tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "VATokenizer" and config["num_latents"] == 16
    loaded = VATokenizer.from_pretrained(tmp_path)
    assert loaded.fingerprint() == tiny_tokenizer.fingerprint()
    tokens2 = loaded.encode(pts, nrm)
    assert all(torch.equal(x, y) for x, y in zip(tokens, tokens2))
    assert torch.equal(loaded.decode_tokens(tokens2, q), logits)


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_half_storage_halves_the_file_and_loads_as_float32(tiny_tokenizer, tmp_path, storage):
    from safetensors import safe_open

    pts, nrm, q = _batch()
    tiny_tokenizer.quantizer.kmeans_init(tiny_tokenizer.posterior(pts, nrm)["z"].detach())
    tiny_tokenizer.eval()
    full, half = tmp_path / "full", tmp_path / "half"
    tiny_tokenizer.save_pretrained(full)
    tiny_tokenizer.save_pretrained(half, storage_dtype=storage)
    size_full, size_half = ((p / "model.safetensors").stat().st_size for p in (full, half))
    assert size_half < 0.55 * size_full
    with safe_open(str(half / "model.safetensors"), "pt") as f:
        stored_fingerprint = f.metadata()["fingerprint"]
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert getattr(torch, storage) in dtypes and torch.float32 not in dtypes
    loaded = VATokenizer.from_pretrained(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    # the stored fingerprint is the loaded model's (rounded weights), not the in-memory float32 model's
    assert loaded.fingerprint() == stored_fingerprint != tiny_tokenizer.fingerprint()
    tol = 2e-2 if storage == "bfloat16" else 2e-3
    tokens = tiny_tokenizer.encode(pts, nrm)
    torch.testing.assert_close(loaded.decode_tokens(tokens, q), tiny_tokenizer.decode_tokens(tokens, q),
                               rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="floating"):
        tiny_tokenizer.save_pretrained(tmp_path / "bad", storage_dtype=torch.int8)


def test_fingerprint_changes_with_weights(tiny_tokenizer):
    before = tiny_tokenizer.fingerprint()
    with torch.no_grad():
        tiny_tokenizer.decoder.mlp[0].weight[0, 0] += 1e-3
    assert tiny_tokenizer.fingerprint() != before


def test_prefix_decoding_gives_a_coarser_field(tiny_tokenizer):
    pts, nrm, q = _batch(B=8, Q=2048)
    tiny_tokenizer.eval()
    z = tiny_tokenizer.posterior(pts, nrm)["z"].detach()
    tiny_tokenizer.quantizer.kmeans_init(z, iters=10)  # codes of these latents, as training makes them
    tokens = tiny_tokenizer.encode(pts, nrm)
    K = len(tokens)
    full = tiny_tokenizer.decode_tokens(tokens, q)
    continuous = tiny_tokenizer.decoder.query(tiny_tokenizer.decoder.planes(z), q)
    latent_err, field_err = [], []
    for k in range(1, K + 1):
        latent = tiny_tokenizer.quantizer.indices_to_latent(tokens[:k]).detach()
        latent_err.append(float((latent - z).square().mean()))
        field_err.append(float((tiny_tokenizer.decode_tokens(tokens[:k], q) - continuous).abs().mean()))
    # every scale refines the latent; the coarsest is far from it; the decoded field follows
    assert all(b <= a * 1.02 for a, b in zip(latent_err, latent_err[1:])), latent_err
    assert latent_err[-1] < 0.5 * latent_err[0], latent_err
    assert field_err[-1] < field_err[0], field_err
    assert torch.equal(tiny_tokenizer.decode_tokens(tokens[:K], q), full)
    fn = tiny_tokenizer.occupancy_fn([t[:1] for t in tokens])
    torch.testing.assert_close(fn(q[0]), full[0])
    with pytest.raises(ValueError):
        tiny_tokenizer.decode_tokens([tokens[1]], q)  # scale 2 where scale 1 belongs


def test_plane_sampling_keeps_fp32_coordinates_under_bf16_autocast():
    from vat3d.models.triplane import sample_planes

    torch.manual_seed(0)
    planes = torch.randn(2, 3, 4, 16, 16).to(torch.bfloat16)
    points = torch.rand(2, 500, 3) * 2 - 1  # coordinates bf16 cannot represent
    reference = sample_planes(planes.float(), points)  # fp32 planes, fp32 points
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sampled = sample_planes(planes, points)
    assert sampled.dtype == torch.float32
    assert torch.equal(sampled, reference)
    # what sampling at bf16-rounded coordinates gives instead: a different field
    rounded = sample_planes(planes.float(), points.to(torch.bfloat16).float())
    assert (rounded - reference).abs().max() > 1e-3


@pytest.mark.parametrize("kwargs", [dict(encoder_type="in_context"), dict(compress=False), dict(variational=False),
                                    dict(scale_mode="1d"), dict(plane_aggregation="concat"),
                                    dict(gradient_checkpointing=True)])
def test_variants_train_one_step(tiny_tokenizer_kwargs, kwargs):
    torch.manual_seed(0)
    model = VATokenizer(**{**tiny_tokenizer_kwargs, **kwargs})
    pts, nrm, q = _batch()
    out = model(pts, nrm, q)
    loss = out["logits"].square().mean() + out["vq_loss"] + out["kl"]
    loss.backward()
    grads = [p.grad for p in model.encoder_blocks.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if not kwargs.get("variational", True):
        assert float(out["kl"]) == 0.0


def test_triplane_axes_are_explicit():
    from vat3d.models.triplane import PLANE_NAMES, sample_planes

    planes = torch.zeros(1, 3, 1, 5, 5)
    ramp = torch.linspace(-1, 1, 5)
    planes[0, 0, 0] = ramp.view(1, 5)        # xy plane: value = x (width axis)
    planes[0, 1, 0] = ramp.view(5, 1) * 10   # xz plane: value = 10 z (height axis)
    planes[0, 2, 0] = ramp.view(5, 1) * 100  # yz plane: value = 100 z
    pts = torch.tensor([[[0.5, -0.25, 1.0]]])
    feats = sample_planes(planes, pts, "concat")[0, 0]
    assert PLANE_NAMES == ("xy", "xz", "yz")
    torch.testing.assert_close(feats, torch.tensor([0.5, 10.0, 100.0]))


@pytest.mark.parametrize("aggregation", ["sum", "concat"])
def test_grid_queries_equal_point_queries(tiny_tokenizer_kwargs, aggregation):
    """The grid-index path (plane tables) gives the logits of the point path at the grid's points."""
    from vat3d.geometry.marching import grid_points

    torch.manual_seed(0)
    model = VATokenizer(**{**tiny_tokenizer_kwargs, "plane_aggregation": aggregation}).eval()
    tokens = [torch.randint(0, model.codebook_size, (1, n)) for n in model.scale_sizes]
    field = model.occupancy_fn(tokens, chunk_size=500)
    resolution = 13
    points = torch.from_numpy(grid_points(resolution))
    ijk = torch.stack(torch.meshgrid(*[torch.arange(resolution)] * 3, indexing="ij"), -1).reshape(-1, 3)
    by_points = field(points)
    by_grid = field.grid_evaluator(resolution)(ijk)
    assert by_grid.shape == (resolution**3,) and by_grid.dtype == torch.float32
    assert by_points.std() > 0
    torch.testing.assert_close(by_grid, by_points, atol=1e-5, rtol=1e-5)
    # a permuted subset gives the same values at the same points (no dependence on neighbours)
    perm = torch.randperm(len(ijk))[:300]
    torch.testing.assert_close(field.grid_evaluator(resolution)(ijk[perm]), by_points[perm], atol=1e-5, rtol=1e-5)


def test_bf16_field_is_close_and_precision_is_checked(tiny_tokenizer):
    tiny_tokenizer.eval()
    tokens = [torch.randint(0, tiny_tokenizer.codebook_size, (1, n)) for n in tiny_tokenizer.scale_sizes]
    points = torch.rand(2000, 3) * 2 - 1
    fp32 = tiny_tokenizer.occupancy_fn(tokens)(points)
    bf16 = tiny_tokenizer.occupancy_fn(tokens, precision="bf16")(points)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert (bf16 - fp32).abs().max() < 0.05 * fp32.abs().max() + 1e-3
    auto = tiny_tokenizer.occupancy_fn(tokens, precision="auto")
    from vat3d.models.modules import has_native_bf16

    assert auto.precision == ("bf16" if has_native_bf16("cpu") else "fp32")  # bf16 only where it is native
    assert torch.equal(auto(points), bf16 if auto.precision == "bf16" else fp32)
    with pytest.raises(ValueError, match="precision"):
        tiny_tokenizer.occupancy_fn(tokens, precision="fp8")


def test_config_key_the_model_does_not_take_is_an_error_naming_it(tiny_tokenizer, tmp_path):
    import json

    tiny_tokenizer.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["plane_resolution_x"] = 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"takes no config keys \['plane_resolution_x'\]"):
        VATokenizer.from_pretrained(tmp_path / "m")
