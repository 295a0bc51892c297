"""Token data: `vat3d tokenize` output, resume/idempotence, shards, fingerprint checks, TokenDataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from conftest import TINY_TOKENIZER
from vat3d.cli import app
from vat3d.data import prepare_dataset, read_metadata
from vat3d.data.prepare import shard_of
from vat3d.data.token_dataset import TokenDataset, batch_conditions, split_tokens
from vat3d.data.tokens import (TokenizerMismatchError, check_token_fingerprint, load_token_file, read_token_info,
                               tokenize_dataset)
from vat3d.models.tokenizer import VATokenizer

VIEWS = ["--views", "4", "--image-size", "48", "--no-progress"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    summary = prepare_dataset("procedural:8", root, num_surface=512, num_volume=256, num_near=256)
    assert summary.done == 8
    return root


def _tokenizer_dir(root: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = VATokenizer(**TINY_TOKENIZER, num_points=256)
    with torch.no_grad():
        model.quantizer.codebook.weight.normal_()  # spread codes: varied tokens from a random model
    return model.save_pretrained(root / f"tok{seed}")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return _tokenizer_dir(root, 0), _tokenizer_dir(root, 1)


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory, prepared, tokenizers) -> Path:
    out = tmp_path_factory.mktemp("tokens") / "out"
    result = CliRunner().invoke(app, ["tokenize", str(tokenizers[0]), str(prepared), str(out), *VIEWS])
    assert result.exit_code == 0, result.output
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "shapes").rglob("*.npz"))}


def test_tokenize_output(tokens_dir, prepared, tokenizers):
    tokenizer = VATokenizer.from_pretrained(tokenizers[0])
    info = read_token_info(tokens_dir)
    assert info["tokenizer_fingerprint"] == tokenizer.fingerprint()
    assert info["scale_sizes"] == tokenizer.scale_sizes and info["tokenizer"] == str(tokenizers[0].resolve())
    assert info["settings"]["num_points"] == 256 and info["settings"]["num_views"] == 4
    assert info["settings"]["lighting"] == "random" and info["settings"]["elevations"] == [20.0, -10.0, 45.0]
    rows = read_metadata(tokens_dir, status="done")
    prepared_rows = {r["id"]: r for r in read_metadata(prepared, status="done")}
    assert sorted(r["id"] for r in rows) == sorted(prepared_rows)
    seen_tokens = set()
    for row in rows:
        data = load_token_file(tokens_dir / row["file"], views=None)
        with np.load(tokens_dir / row["file"]) as raw:
            assert raw["tokens"].dtype == np.int16 and raw["view_00"].dtype == np.uint8
        assert data["scale_sizes"] == tokenizer.scale_sizes and data["tokens"].shape == (30,)
        assert 0 <= data["tokens"].min() and data["tokens"].max() < tokenizer.codebook_size
        assert data["caption"] == prepared_rows[row["id"]]["caption"] != ""
        assert data["family"] == data["class_name"] == prepared_rows[row["id"]]["family"]
        assert len(data["images"]) == 4 and data["images"][0].shape == (48, 48, 3)
        assert all((image < 250).any() for image in data["images"])  # the shape is in view, shaded
        assert data["elevations"].tolist() == [20.0, -10.0, 45.0, 20.0] and len(set(data["azimuths"].tolist())) == 4
        seen_tokens.add(tuple(data["tokens"].tolist()))
    assert len(seen_tokens) > 1
    # the tokens are the tokenizer's deterministic encoding of the recorded point subset
    from vat3d.data.tokens import load_surface

    row = rows[0]
    surface = load_surface(prepared, prepared_rows[row["id"]], 256, seed=0)
    expected = torch.cat(tokenizer.encode(torch.from_numpy(surface["points"])[None],
                                          torch.from_numpy(surface["normals"])[None]), dim=1)[0]
    assert np.array_equal(load_token_file(tokens_dir / row["file"])["tokens"], expected.numpy())


def test_tokenize_is_resumable_idempotent_and_shardable(tmp_path, tokens_dir, prepared, tokenizers):
    tokenizer = VATokenizer.from_pretrained(tokenizers[0])
    # rerun: nothing redone, files unchanged
    before = _digests(tokens_dir)
    again = tokenize_dataset(tokenizer, prepared, tokens_dir, image_size=48, num_views=4)
    assert (again.skipped, again.done) == (8, 0) and _digests(tokens_dir) == before
    # an interrupted run (only some shapes done, a stale temporary) finishes the rest identically
    partial = tmp_path / "partial"
    first = tokenize_dataset(tokenizer, prepared, partial, image_size=48, num_views=4, limit=3, batch_size=2)
    assert first.done == 3
    (partial / "shapes" / "zz").mkdir(parents=True)
    (partial / "shapes" / "zz" / ".x.npz.123.tmp").write_bytes(b"junk")
    rest = tokenize_dataset(tokenizer, prepared, partial, image_size=48, num_views=4, batch_size=5)
    assert (rest.skipped, rest.done) == (3, 5)
    assert _digests(partial) == before
    # shards on "two machines" cover every shape once and agree with the single run
    sharded = tmp_path / "sharded"
    ids = [r["id"] for r in read_metadata(prepared, status="done")]
    for index in range(2):
        result = CliRunner().invoke(app, ["tokenize", str(tokenizers[0]), str(prepared), str(sharded),
                                          "--shard", f"{index}/2", *VIEWS])
        assert result.exit_code == 0, result.output
        assert f"done {sum(shard_of(i, 2) == index for i in ids)}" in result.output
    assert _digests(sharded) == before
    assert len(list((sharded / "metadata").glob("*.jsonl"))) == 2
    # a render pool gives the same files
    pooled = tmp_path / "pooled"
    assert tokenize_dataset(tokenizer, prepared, pooled, image_size=48, num_views=4, workers=2, batch_size=4).done == 8
    assert _digests(pooled) == before
    # changed render settings redo the shapes
    changed = tokenize_dataset(tokenizer, prepared, partial, image_size=32, num_views=2, limit=2)
    assert changed.done == 2 and load_token_file(partial / read_metadata(partial)[0]["file"])["num_views"] == 2


def test_tokenize_refuses_another_tokenizer(tmp_path, tokens_dir, prepared, tokenizers):
    result = CliRunner().invoke(app, ["tokenize", str(tokenizers[1]), str(prepared), str(tokens_dir), *VIEWS])
    assert result.exit_code != 0 and "tokenizer" in result.output
    other = VATokenizer.from_pretrained(tokenizers[1])
    with pytest.raises(TokenizerMismatchError):
        check_token_fingerprint(tokens_dir, other.fingerprint())
    with pytest.raises(TokenizerMismatchError):
        TokenDataset(tokens_dir, tokenizer_fingerprint=other.fingerprint())
    # --overwrite starts the folder over with the new tokenizer
    copy = tmp_path / "copy"
    tokenize_dataset(VATokenizer.from_pretrained(tokenizers[0]), prepared, copy, num_views=0, limit=2)
    summary = tokenize_dataset(other, prepared, copy, num_views=0, limit=2, overwrite=True)
    assert summary.done == 2 and read_token_info(copy)["tokenizer_fingerprint"] == other.fingerprint()


def test_tokenize_records_unrenderable_shapes_as_failed(tmp_path, prepared, tokenizers):
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    meta_file = next((data / "metadata").glob("*.jsonl"))
    rows = [json.loads(line) for line in meta_file.read_text().splitlines()]
    rows[0].update(source="folder", path=str(tmp_path / "missing.obj"))
    meta_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tokenize_dataset(VATokenizer.from_pretrained(tokenizers[0]), data, tmp_path / "out", image_size=32)
    assert (summary.done, summary.failed) == (7, 1) and "render" in summary.failures[0][1]
    # without views the same shape tokenizes fine
    summary = tokenize_dataset(VATokenizer.from_pretrained(tokenizers[0]), data, tmp_path / "out0", num_views=0)
    assert summary.done == 8


def test_token_dataset(tokens_dir):
    train = TokenDataset(tokens_dir, "train", val_fraction=0.3, seed=0)
    val = TokenDataset(tokens_dir, "val", val_fraction=0.3, seed=0)
    assert len(train) + len(val) == 8 and set(train.ids).isdisjoint(val.ids)
    assert train.class_names == val.class_names == sorted({r["family"] for r in read_metadata(tokens_dir)})
    item = train.item(0, seed=5)
    assert [t.shape[0] for t in item["indices"]] == train.scale_sizes
    assert torch.equal(torch.cat(item["indices"]), item["tokens"])
    assert item["image"].shape == (3, 48, 48) and 0 <= item["image"].min() and item["image"].max() <= 1
    assert train.class_names[item["label"]] == item["class"] and item["caption"]
    # the view choice is a function of (seed, id)
    views = [train.item(0, seed=s)["view"] for s in range(16)]
    assert views == [train.item(0, seed=s)["view"] for s in range(16)] and len(set(views)) > 1
    assert all(val.item(0)["view"] == val.item(0)["view"] for _ in range(3))
    batch = next(iter(DataLoader(train, batch_size=3)))
    assert [tuple(t.shape) for t in batch["indices"]] == [(3, n) for n in train.scale_sizes]
    assert batch["image"].shape == (3, 3, 48, 48) and len(batch["caption"]) == 3
    cond = batch_conditions(batch, "text+image")
    assert cond["text"] == list(batch["caption"]) and cond["image"] is batch["image"]
    assert torch.equal(batch_conditions(batch, "class"), batch["label"])
    assert [t.shape for t in split_tokens(batch["tokens"], train.scale_sizes)] == [t.shape for t in batch["indices"]]
    assert "image" not in TokenDataset(tokens_dir, "all", images=False).item(0)


def test_token_folder_records_every_data_folder_tokenized_into_it(tmp_path, prepared, tokenizers):
    import shutil

    tokenizer = VATokenizer.from_pretrained(tokenizers[0])
    second = tmp_path / "second"
    shutil.copytree(prepared, second)
    out = tmp_path / "tokens"
    tokenize_dataset(tokenizer, prepared, out, num_views=0, limit=1)
    assert read_token_info(out)["data_dirs"] == [str(prepared.resolve())]
    tokenize_dataset(tokenizer, second, out, num_views=0, limit=1)
    tokenize_dataset(tokenizer, prepared, out, num_views=0, limit=1)  # a folder already listed is not listed twice
    info = read_token_info(out)
    assert info["data_dirs"] == [str(prepared.resolve()), str(second.resolve())]
    assert info["data"] == str(prepared.resolve())  # the last run's folder, as before
