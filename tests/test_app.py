"""``vat3d app``: the handler logic (fast, no browser) and the real page driven in headless Chromium.

The browser tests need gradio (``pip install 'vat3d[app]'``), selenium, and a Chromium with its
driver (Debian: ``apt-get install chromium chromium-driver``); without them they are skipped.
Tiny random models decode mostly garbage (or empty) shapes: the tests check the plumbing, not
the quality.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
import trimesh

from conftest import TINY_TOKENIZER
from vat3d.app.core import AppError, AppModels, ShapeTokens, Workdir, check_upload, condition_inputs, vat_bytes
from vat3d.codec.api import decode_tokens, encode_mesh, read_tokens


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random tokenizer and a tiny class-conditioned generator, saved like real models."""
    from vat3d.models.generator import NextScaleGenerator
    from vat3d.models.tokenizer import VATokenizer

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tokenizer = VATokenizer(**TINY_TOKENIZER).eval()
    tokenizer.save_pretrained(root / "tokenizer")
    generator = NextScaleGenerator.from_tokenizer(tokenizer, width=32, depth=1, heads=4, cond_type="class",
                                                  class_names=["chair", "mug", "table"])
    generator.save_pretrained(root / "generator")
    return root


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from vat3d.pretrained import load_tokenizer

    return load_tokenizer(model_dir / "tokenizer")


@pytest.fixture(scope="module")
def generator(model_dir):
    from vat3d.pretrained import load_generator

    return load_generator(model_dir / "generator")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    """A procedural shape as OBJ, a non-mesh with a mesh suffix, a text file and an empty file."""
    from vat3d.data.procedural import make_shape

    root = tmp_path_factory.mktemp("meshes")
    good = root / "torus.obj"
    make_shape(4).mesh.export(str(good))
    bad = root / "garbage.obj"
    bad.write_text("this is not a mesh\n")
    text = root / "notes.txt"
    text.write_text("hello")
    empty = root / "empty.stl"
    empty.write_bytes(b"")
    return {"good": good, "bad": bad, "text": text, "empty": empty}


@pytest.fixture
def models(tokenizer, generator, tmp_path):
    return AppModels(tokenizer, generator, max_upload_mb=5, workdir=Workdir(tmp_path / "work"))


# ---------------------------------------------------------------------------------- handler logic

def test_check_upload_rejects_clearly(meshes, tmp_path):
    with pytest.raises(AppError, match="Upload a mesh"):
        check_upload(None, 10**6)
    with pytest.raises(AppError, match="gone"):
        check_upload(tmp_path / "missing.obj", 10**6)
    with pytest.raises(AppError, match="not a supported mesh format"):
        check_upload(meshes["text"], 10**6)
    with pytest.raises(AppError, match="empty"):
        check_upload(meshes["empty"], 10**6)
    with pytest.raises(AppError, match=r"the limit is"):
        check_upload(meshes["good"], 100)
    assert check_upload(meshes["good"], 10**8) == meshes["good"]


def test_size_limit_and_bad_file(tokenizer, meshes, tmp_path):
    small = AppModels(tokenizer, max_upload_mb=0.0001, workdir=Workdir(tmp_path))  # 100 bytes
    with pytest.raises(AppError, match=r"MB; the limit is"):
        small.encode(meshes["good"])
    roomy = AppModels(tokenizer, max_upload_mb=5, workdir=Workdir(tmp_path))
    with pytest.raises(AppError, match="Could not read this file as a mesh"):
        roomy.encode(meshes["bad"])


def test_encode_then_every_prefix_decodes(models, tokenizer, meshes):
    shape, vat_path, num_bytes = models.encode(meshes["good"])
    expected = encode_mesh(tokenizer, meshes["good"])
    assert vat_path.read_bytes() == expected.data and num_bytes == expected.num_bytes
    assert (vat_path.parent / "input.glb").is_file()
    K = len(tokenizer.scale_sizes)
    assert shape.num_scales == K and [t.size for t in shape.tokens] == list(tokenizer.scale_sizes)
    for k in range(1, K + 1):
        decoded = models.decode(shape, k, 32)
        assert decoded.num_scales == k and decoded.total_scales == K
        vat, transform = read_tokens(tokenizer, decoded.vat.read_bytes())
        assert len(vat.tokens) == k and decoded.num_bytes == decoded.vat.stat().st_size
        assert all(np.array_equal(a, b) for a, b in zip(vat.tokens, expected.tokens[:k]))
        reference = decode_tokens(tokenizer, expected.tokens, expected.transform, resolution=32, num_scales=k)
        if decoded.glb is None:
            assert len(reference.faces) == 0 and "empty" in decoded.message
        else:
            shown = trimesh.load(decoded.glb, force="mesh")
            assert len(shown.faces) == len(reference.faces)
            assert f"{decoded.num_bytes:,} bytes" in decoded.message
    assert models.decode(shape, 99, 32).num_scales == K  # the slider value is clamped
    assert models.decode(shape, 0, 32).num_scales == 1
    with pytest.raises(AppError, match="Upload a mesh first"):
        models.decode(None, 1, 32)


def test_encode_takes_the_effort_and_rate_settings(models, tokenizer, meshes):
    fast, _, _ = models.encode(meshes["good"])
    full = encode_mesh(tokenizer, meshes["good"])
    limit = full.num_bytes - 1  # one byte short: the last scale is dropped
    shape, vat_path, num_bytes = models.encode(meshes["good"], effort="balanced", max_bytes=limit, target_iou=0)
    expected = encode_mesh(tokenizer, meshes["good"], effort="balanced", max_bytes=limit)
    assert vat_path.read_bytes() == expected.data and num_bytes <= limit
    assert shape.num_scales == fast.num_scales - 1 and shape.effort == "balanced"
    assert shape.score is not None and shape.seconds > 0
    assert models.decode(shape, 99, 32).num_scales == shape.num_scales
    with pytest.raises(AppError, match="Unknown effort"):
        models.encode(meshes["good"], effort="fastest")


def test_empty_decoded_surface_is_a_message(models, meshes, monkeypatch):
    shape, _, _ = models.encode(meshes["good"])
    monkeypatch.setattr("vat3d.codec.api.decode_tokens", lambda *a, **k: trimesh.Trimesh())
    decoded = models.decode(shape, 1, 32)
    assert decoded.glb is None and "empty" in decoded.message and decoded.vat.is_file()


def test_condition_inputs_follow_cond_type():
    class Fake:
        def __init__(self, **config):
            self.config = config

    assert condition_inputs(None)["text"] is False
    assert condition_inputs(Fake(cond_type="text")) == {"text": True, "image": False, "classes": None,
                                                        "cond_type": "text"}
    both = condition_inputs(Fake(cond_type="text+image"))
    assert both["text"] and both["image"] and both["classes"] is None
    assert condition_inputs(Fake(cond_type="image"))["image"] and not condition_inputs(Fake(cond_type="image"))["text"]
    assert condition_inputs(Fake(cond_type="class", class_names=["a", "b"]))["classes"] == ["a", "b"]
    assert condition_inputs(Fake(cond_type="class", num_classes=3))["classes"] == ["0", "1", "2"]
    none = condition_inputs(Fake(cond_type="none"))
    assert not none["text"] and not none["image"] and none["classes"] is None


def test_generate_class_and_image(models, tokenizer, tmp_path):
    from PIL import Image

    from vat3d.models.generator import NextScaleGenerator

    try:
        result = models.generate(class_label="mug", seed=1, resolution=32)
    except AppError as error:  # a random model may well produce an empty surface
        assert "empty" in str(error)
    else:
        assert result.glb.is_file() and "class 'mug'" in result.message
        vat, _ = read_tokens(tokenizer, result.vat.read_bytes())
        assert len(vat.tokens) == len(tokenizer.scale_sizes)

    torch.manual_seed(0)
    image_gen = NextScaleGenerator.from_tokenizer(tokenizer, width=32, depth=1, heads=4, cond_type="image",
                                                  conditioner_kwargs=dict(channels=(8, 16), grid=2, image_size=32))
    image_models = AppModels(tokenizer, image_gen, workdir=Workdir(tmp_path))
    picture = Image.new("RGB", (40, 30), (200, 30, 30))
    try:
        result = image_models.generate(text="ignored: this model takes images", image=picture, seed=0,
                                       resolution=32)
    except AppError as error:
        assert "empty" in str(error)
    else:
        assert "the image" in result.message and "prompt" not in result.message

    no_gen = AppModels(tokenizer, None, workdir=Workdir(tmp_path))
    with pytest.raises(AppError, match="No generator"):
        no_gen.generate(text="a chair")


def test_mismatched_generator_is_disabled_with_a_reason(tokenizer, tmp_path):
    from vat3d.models.generator import NextScaleGenerator
    from vat3d.models.tokenizer import VATokenizer

    torch.manual_seed(5)
    other = VATokenizer(**TINY_TOKENIZER)
    generator = NextScaleGenerator.from_tokenizer(other, width=32, depth=1, heads=4, cond_type="none")
    models = AppModels(tokenizer, generator, workdir=Workdir(tmp_path))
    assert models.generator is None and "does not fit" in models.generator_note


def test_vat_bytes_prefix_sizes(tokenizer):
    rng = np.random.default_rng(0)
    shape = ShapeTokens("x", [rng.integers(0, tokenizer.codebook_size, n) for n in tokenizer.scale_sizes],
                        center=(1.0, 2.0, 3.0), scale=0.5)
    sizes = [len(vat_bytes(tokenizer, shape, k)) for k in range(1, shape.num_scales + 1)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    _, transform = read_tokens(tokenizer, vat_bytes(tokenizer, shape))
    assert np.allclose(transform.center, (1, 2, 3)) and transform.scale == pytest.approx(0.5)


# ------------------------------------------------------------------------------ gradio, no browser

def test_web_handlers_never_raise(tokenizer, generator, meshes, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'vat3d[app]')")
    from vat3d.app.web import build_app

    demo = build_app(tokenizer, generator, max_upload_mb=5, examples=False, workdir=Workdir(tmp_path))
    on_upload, on_decode = demo.vat3d_handlers["upload"], demo.vat3d_handlers["decode"]
    state, preview, glb, vat, size, status = on_upload(str(meshes["bad"]), 4, 32)
    assert state is None and glb is None and status.startswith("⚠️") and "Could not read" in status
    state, preview, glb, vat, size, status = on_upload(str(meshes["good"]), 2, 32)
    assert isinstance(state, ShapeTokens) and os.path.getsize(vat) == int(
        re.search(r"([\d,]+) bytes", size).group(1).replace(",", ""))
    assert "scales 1–2 of" in status or "empty" in status
    glb, status = on_decode(state, 1, 32)
    assert "scale 1 of" in status
    assert on_upload(None, 1, 32)[0] is None  # cleared upload resets the page
    viewer, gen_files, gen_status = demo.vat3d_handlers["generate"](None, None, "chair", 3, 3.0, 32)
    assert gen_status  # a shape or a clear "empty" message


def test_cli_app_command(monkeypatch):
    from typer.testing import CliRunner

    from vat3d.cli import app

    result = CliRunner().invoke(app, ["app", "--help"])
    assert result.exit_code == 0 and "--share" in result.output and "--port" in result.output
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if gradio were not installed
    result = CliRunner().invoke(app, ["app"])
    assert result.exit_code == 1 and "pip install 'vat3d[app]'" in result.output


# -------------------------------------------------------------------------- the real page, Chromium

def _find_browser() -> tuple[str, str] | None:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(model_dir, tmp_path_factory):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'vat3d[app]')")
    from vat3d.app.web import build_app, launch_app
    from vat3d.pretrained import load_generator, load_tokenizer

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    demo = build_app(tokenizer, load_generator(model_dir / "generator"), max_upload_mb=5, examples=False,
                     workdir=Workdir(tmp_path_factory.mktemp("appwork")))
    port = _free_port()
    launch_app(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", tokenizer
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    found = _find_browser()
    if found is None:
        pytest.skip("no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(found[1]), options=options)
    except WebDriverException as error:
        pytest.skip(f"chromium is installed but would not start headless: {error.msg}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 90)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mesh-upload input[type=file]"))
    return wait


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


@pytest.mark.timeout(300)
def test_browser_upload_shows_shape_and_vat_size(served_app, browser, meshes):
    from selenium.webdriver.common.by import By

    url, tokenizer = served_app
    wait = _open(browser, url)
    browser.find_element(By.CSS_SELECTOR, "#mesh-upload input[type=file]").send_keys(str(meshes["good"]))
    wait.until(lambda d: "bytes" in _text(d, "vat-size"))
    wait.until(lambda d: _text(d, "reconstruct-status").startswith(("Decoded", "⚠️")))
    status = _text(browser, "reconstruct-status")
    shown = int(re.search(r"([\d,]+) bytes", _text(browser, "vat-size")).group(1).replace(",", ""))
    assert shown == encode_mesh(tokenizer, meshes["good"]).num_bytes

    # the offered download is that file: same size, and it parses with this tokenizer
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vat-download a[href]"))[0]
    data = urllib.request.urlopen(link.get_attribute("href"), timeout=30).read()
    assert len(data) == shown
    vat, _ = read_tokens(tokenizer, data)
    assert len(vat.tokens) == len(tokenizer.scale_sizes)

    if status.startswith("Decoded"):  # a 3D view of the decoded GLB (a random model may decode nothing)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#recon-viewer canvas"))
    else:
        assert "empty" in status
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-viewer canvas"))


@pytest.mark.timeout(300)
def test_browser_bad_file_shows_a_message(served_app, browser, meshes):
    from selenium.webdriver.common.by import By

    url, _ = served_app
    wait = _open(browser, url)
    browser.find_element(By.CSS_SELECTOR, "#mesh-upload input[type=file]").send_keys(str(meshes["bad"]))
    wait.until(lambda d: _text(d, "reconstruct-status").startswith("⚠️"))
    assert "Could not read this file as a mesh" in _text(browser, "reconstruct-status")
    assert not _text(browser, "vat-size")

    # the app is still alive: a good file right after works
    wait = _open(browser, url)
    browser.find_element(By.CSS_SELECTOR, "#mesh-upload input[type=file]").send_keys(str(meshes["good"]))
    wait.until(lambda d: "bytes" in _text(d, "vat-size"))


@pytest.mark.timeout(300)
def test_browser_generate_tab(served_app, browser):
    from selenium.webdriver.common.by import By

    url, _ = served_app
    wait = _open(browser, url)
    browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Generate')]").click()
    wait.until(lambda d: d.find_element(By.ID, "generate-button").is_displayed())
    browser.find_element(By.ID, "generate-button").click()
    t0 = time.time()
    wait.until(lambda d: _text(d, "generate-status").strip())
    status = _text(browser, "generate-status")
    assert status.startswith("Generated from class") or "empty" in status, status
    assert time.time() - t0 < 90
