"""Encode-time search (vat3d.codec.refine) and rate control, on tiny untrained models."""

from __future__ import annotations

import pytest
import torch
import trimesh

from conftest import TINY_TOKENIZER
from vat3d.codec.api import encode_mesh, encode_meshes, read_tokens, surface_input, tokens_to_bytes
from vat3d.codec.refine import (EFFORTS, TURN_SEARCH_ORDER, LabelledQueries, effort_settings, label_queries,
                                refine_tokens)
from vat3d.geometry.normalize import normalize_mesh
from vat3d.models.tokenizer import VATokenizer

FEW = dict(latent_steps=12, code_steps=4, score_every=4, queries_per_step=1024, num_volume=2048, num_near=2048)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VATokenizer(**dict(TINY_TOKENIZER, num_points=256)).eval()


@pytest.fixture(scope="module")
def box():
    return trimesh.creation.box(extents=(1.0, 0.6, 0.3))


@pytest.fixture(scope="module")
def shipped():
    """The shipped tokenizer: the search needs a trained decoder to have something to find."""
    from vat3d.pretrained import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture(scope="module")
def corner():
    """Two thin bars in an L: the shipped encoder's first guess is poor (held-out IoU about 0.1)."""
    return trimesh.util.concatenate([trimesh.creation.box(extents=(1.0, 0.1, 0.1)),
                                     trimesh.creation.box(extents=(0.1, 1.0, 0.1))])


SHORT = dict(latent_steps=10, code_steps=0, score_every=5, queries_per_step=2048, lr=0.05)


def _inputs(model, mesh, seed=0):
    points, normals, _ = surface_input(mesh, model.num_points, seed=seed)
    queries = label_queries(normalize_mesh(mesh)[0], num_volume=2048, num_near=2048, seed=seed)
    return points, normals, queries


def test_search_raises_the_heldout_score_of_a_thin_shape(shipped, corner):
    points, normals, queries = _inputs(shipped, corner)
    result = refine_tokens(shipped, points, normals, [queries], effort="fast", **SHORT)
    assert result.scores[0] > result.fast_scores[0] + 0.1
    assert result.sources[0].startswith("latent@")
    assert [t.shape[1] for t in result.tokens[0]] == shipped.scale_sizes


def test_search_is_deterministic_for_a_seed(model, box):
    points, normals, queries = _inputs(model, box)
    a = refine_tokens(model, points, normals, [queries], effort="fast", seed=3, **FEW)
    b = refine_tokens(model, points, normals, [queries], effort="fast", seed=3, **FEW)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens[0], b.tokens[0]))
    assert a.scores == b.scores and a.history == b.history


def test_bf16_search_is_deterministic_and_scored_in_fp32(model, box):
    """bf16 search steps (autocast) are deterministic for a seed, and the held-out scores stay fp32
    (the fast candidate's score is the same as an fp32 search's)."""
    points, normals, queries = _inputs(model, box)
    a = refine_tokens(model, points, normals, [queries], effort="fast", seed=1, precision="bf16", **FEW)
    b = refine_tokens(model, points, normals, [queries], effort="fast", seed=1, precision="bf16", **FEW)
    fp32 = refine_tokens(model, points, normals, [queries], effort="fast", seed=1, **FEW)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens[0], b.tokens[0])) and a.history == b.history
    assert a.fast_scores == fp32.fast_scores and a.scores[0] >= a.fast_scores[0]
    with pytest.raises(ValueError, match="precision must be"):
        refine_tokens(model, points, normals, [queries], effort="fast", precision="fp16", **FEW)


def test_batched_search_matches_one_by_one(model, box):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    pa, na, qa = _inputs(model, box)
    pb, nb, qb = _inputs(model, sphere)
    together = refine_tokens(model, torch.cat([pa, pb]), torch.cat([na, nb]), [qa, qb], effort="fast", **FEW)
    alone = refine_tokens(model, pb, nb, [qb], effort="fast", **FEW)
    assert together.scores[1] == pytest.approx(alone.scores[0], abs=1e-6)
    assert all(torch.equal(x, y) for x, y in zip(together.tokens[1], alone.tokens[0]))


def test_never_worse_than_fast_when_the_search_collapses(shipped, box):
    """Fit labels that say 'empty everywhere' (the search collapses to an empty shape), score on the true ones."""
    points, normals, queries = _inputs(shipped, box)
    misleading = LabelledQueries(queries.train_points_Q3, torch.zeros_like(queries.train_labels_Q),
                                 queries.heldout_points_H3, queries.heldout_labels_H, queries.heldout_near_H)
    result = refine_tokens(shipped, points, normals, [misleading], effort="fast", **SHORT)
    searched = [h["scores"][0] for h in result.history if h["phase"] != "fast"]
    assert len(searched) == 2 and max(searched) < 0.5 * result.fast_scores[0]  # the search collapsed...
    assert result.sources == ["fast"]  # ...so the encoder's own tokens are kept
    assert result.scores[0] == result.fast_scores[0]
    fast = shipped.encode(points, normals)
    assert all(torch.equal(x, y) for x, y in zip(result.tokens[0], fast))


def test_model_is_left_as_it_was(model, box):
    points, normals, queries = _inputs(model, box)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    refine_tokens(model, points, normals, [queries], effort="fast", **FEW)
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_effort_is_a_clear_error():
    with pytest.raises(ValueError, match="effort must be one of"):
        effort_settings("fastest")
    assert set(EFFORTS) == {"fast", "turned", "oriented", "balanced", "best"}


def test_max_bytes_keeps_the_longest_prefix_that_fits(model, box):
    full = encode_mesh(model, box)
    assert encode_mesh(model, box, max_bytes=full.num_bytes).data == full.data
    limit = full.num_bytes - 1
    cut = encode_mesh(model, box, max_bytes=limit)
    assert cut.num_bytes <= limit < full.num_bytes
    assert cut.num_scales == len(model.scale_sizes) - 1
    vat, _ = read_tokens(model, cut.data)
    assert vat.complete and len(vat.tokens) == cut.num_scales  # a prefix file, not a truncated one
    prefix_sizes = [len(tokens_to_bytes(model, full.tokens[:k], full.transform))
                    for k in range(1, len(full.tokens) + 1)]
    assert prefix_sizes == sorted(prefix_sizes)
    for k in range(1, len(prefix_sizes)):  # a budget just under the (k+1)-scale file keeps k scales
        assert encode_mesh(model, box, max_bytes=prefix_sizes[k] - 1).num_scales == k
    with pytest.raises(ValueError, match="not even one scale fits"):
        encode_mesh(model, box, max_bytes=prefix_sizes[0] - 1)


def test_target_iou_keeps_the_shortest_prefix_that_reaches_it(model, box):
    probe = encode_mesh(model, box, target_iou=1.0)  # unreachable: every scale kept, all prefixes scored
    scores = probe.prefix_scores
    assert probe.num_scales == len(model.scale_sizes) and len(scores) == len(model.scale_sizes)
    target = sorted(scores)[len(scores) // 2]
    shape = encode_mesh(model, box, target_iou=target)
    k = shape.num_scales
    assert scores[k - 1] >= target and all(s < target for s in scores[: k - 1])
    assert shape.score == pytest.approx(scores[k - 1])
    assert len(read_tokens(model, shape.data)[0].tokens) == k


def test_best_orientation_is_the_argmax_of_the_label_free_score(model, corner):
    from vat3d.codec.refine import best_orientation, orientation_scores

    points, normals, _ = surface_input(corner, model.num_points)
    scores = orientation_scores(model, points[0], normals[0], 24)
    assert scores.shape == (24,) and ((scores >= 0) & (scores <= 1)).all()
    for k in (24, 6, 2):  # the first k turns of the search order, the earliest in that order among ties
        turns = list(TURN_SEARCH_ORDER[:k])
        assert best_orientation(model, points[0], normals[0], k) == turns[int(torch.argmax(scores[turns]))]
    assert best_orientation(model, points[0], normals[0], 1) == 0
    # a subset of turns scores as in the full list; batching the turns changes nothing
    torch.testing.assert_close(orientation_scores(model, points[0], normals[0], [14, 3, 0]), scores[[14, 3, 0]])
    torch.testing.assert_close(orientation_scores(model, points[0], normals[0], 24, batch_size=5), scores)


def test_turn_search_order_is_every_turn_once_identity_first():
    from vat3d.geometry.normalize import ORIENTATIONS

    assert TURN_SEARCH_ORDER[0] == 0 and sorted(TURN_SEARCH_ORDER) == list(range(len(ORIENTATIONS)))
    assert effort_settings("turned").orientations == 6 and effort_settings("oriented").orientations == 24


def test_oriented_encoding_tokenizes_the_turned_shape_and_decodes_in_place(model, corner, monkeypatch):
    """Turn k: the tokens are the fast tokens of the mesh turned by k about its centre, the file names k,
    and decoding puts the shape back where the input was."""
    import numpy as np

    from vat3d.codec import refine
    from vat3d.codec.api import decode_tokens
    from vat3d.geometry.normalize import ORIENTATIONS

    k = 7
    monkeypatch.setattr(refine, "best_orientation", lambda *args, **kwargs: k)
    shape = encode_mesh(model, corner, effort="oriented")
    assert shape.transform.orientation == k and shape.effort == "oriented"
    center = corner.bounds.mean(0)
    pre_turned = trimesh.Trimesh((corner.vertices - center) @ ORIENTATIONS[k].T + center, corner.faces, process=False)
    fast = encode_mesh(model, pre_turned, effort="fast")
    assert all(np.array_equal(a, b) for a, b in zip(shape.tokens, fast.tokens))
    assert len(shape.data) == len(fast.data) + 1  # the turn's byte
    vat, transform = read_tokens(model, shape.data)
    assert transform.orientation == k
    mine = decode_tokens(model, vat.tokens, transform, resolution=32)
    theirs = decode_tokens(model, fast.tokens, fast.transform, resolution=32)
    assert len(mine.vertices) and len(mine.vertices) == len(theirs.vertices)
    back = (np.asarray(theirs.vertices) - center) @ ORIENTATIONS[k] + center  # undo the turn
    np.testing.assert_allclose(np.asarray(mine.vertices), back, atol=1e-3)


def test_orientation_count_is_checked():
    with pytest.raises(ValueError, match="orientations must be in"):
        effort_settings("fast").__class__(orientations=25)


def test_encode_meshes_batch_equals_single(model, box):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    effort = effort_settings("fast").__class__(**FEW)
    batch = encode_meshes(model, [box, sphere], effort=effort)
    single = encode_mesh(model, sphere, effort=effort)
    assert batch[1].data == single.data and batch[1].effort == "custom"
    assert batch[0].score >= batch[0].fast_score


def test_an_open_surface_keeps_its_fast_tokens_beside_a_searched_shape(model, box):
    """An open sheet has no inside to label: encoding it with a search (or a target IoU) does not fail, it
    keeps the amortised encoder's tokens, unscored, while its batch mate is searched as it would be alone."""
    sheet = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.2]], [[0, 1, 2], [1, 3, 2]])
    effort = effort_settings("fast").__class__(**FEW)
    sheet_out, box_out = encode_meshes(model, [sheet, box], effort=effort)
    fast = encode_mesh(model, sheet)
    assert sheet_out.data == fast.data and sheet_out.score is None and sheet_out.fast_score is None
    assert "no inside" in sheet_out.source
    assert box_out.data == encode_mesh(model, box, effort=effort).data and box_out.score is not None
    kept = encode_mesh(model, sheet, target_iou=0.5)
    assert kept.num_scales == len(model.scale_sizes) and kept.score is None and kept.source == "fast"
