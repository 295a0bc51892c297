"""The Gradio page of ``vat3d app``: reconstruct an uploaded mesh from its tokens, or generate one.

    from vat3d.app.web import build_app, launch_app
    demo = build_app(load_tokenizer("default"), load_generator("default"))
    launch_app(demo, host="127.0.0.1", port=7860)

The handlers only translate between widgets and :class:`vat3d.app.core.AppModels`; they never
raise into Gradio: every failure becomes a message in the page (``#reconstruct-status``,
``#generate-status``). Model work runs in Gradio's worker threads (sync handlers), one request
at a time (one shared concurrency group), behind a queue.

Element ids for scripts and tests: ``mesh-upload``, ``scale-slider``, ``decode-resolution``,
``input-viewer``, ``recon-viewer``, ``vat-size``, ``vat-download``, ``reconstruct-status``; ``prompt``,
``image-prompt``, ``class-label``, ``generate-button``, ``gen-viewer``, ``gen-download``,
``generate-status``.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from vat3d.app.core import (DEFAULT_MAX_UPLOAD_MB, DEFAULT_RESOLUTION, RESOLUTIONS, UPLOAD_SUFFIXES, AppError,
                            AppModels, ShapeTokens, example_meshes)
from vat3d.codec.effort_defaults import DEFAULT_EFFORT
from vat3d.codec.refine import EFFORTS
from vat3d.models.sampling_defaults import CFG_SCALE

try:
    import gradio as gr
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError("the web app needs gradio: pip install 'vat3d[app]'") from _error

log = logging.getLogger(__name__)

CONCURRENCY_GROUP = "vat3d-model"  # every event that runs a model shares one worker
INTRO = """# vat3d
Turn a mesh into a few hundred bytes of multi-scale tokens and back, or generate a shape.
Every prefix of the token scales decodes to a coarser version of the shape."""


def _warn(message: str) -> str:
    return f"⚠️ {message}"


def _unexpected(error: Exception) -> str:
    log.exception("vat3d app: unexpected error")
    return _warn(f"Unexpected error: {type(error).__name__}: {error}")


def _size_text(name: str, upload_bytes: int, vat_bytes: int, shape: ShapeTokens, codebook: int) -> str:
    tokens = sum(int(t.size) for t in shape.tokens)
    ratio = f" ({upload_bytes / vat_bytes:,.0f}× smaller than the upload)" if vat_bytes else ""
    search = (f" Encoded with effort **{shape.effort}** in {shape.seconds:.1f} s"
              + (f", held-out IoU {shape.score:.3f}" if shape.score is not None else "") + ".")
    return (f"**{name}.vat: {vat_bytes:,} bytes**{ratio} — {shape.num_scales} scales, {tokens} tokens "
            f"from a {codebook}-entry codebook." + search)


def build_app(tokenizer, generator=None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, *,
              generator_note: str | None = None, examples: bool = True, workdir=None) -> "gr.Blocks":
    """The Gradio page around a tokenizer (and optionally a generator; ``None`` disables that tab).

    ``generator_note`` replaces the "no generator" message (e.g. why loading it failed).
    The returned Blocks has ``.vat3d_models`` (the :class:`AppModels`), used by :func:`launch_app`.
    """
    models = AppModels(tokenizer, generator, max_upload_mb=max_upload_mb, workdir=workdir,
                       generator_error=generator_note)
    K = models.num_scales
    example_files = example_meshes(models.workdir.root) if examples else []

    # ---- handlers: never raise, always leave the page usable ----
    def on_upload(path: str | None, num_scales: Any, resolution: Any, effort: str = DEFAULT_EFFORT, max_bytes: Any = 0,
                  target_iou: Any = 0):
        if not path:  # cleared
            return None, None, None, None, "", "Upload a mesh or pick an example."
        try:
            shape, vat_path, num_bytes = models.encode(path, effort=effort, max_bytes=max_bytes,
                                                       target_iou=target_iou)
            decoded = models.decode(shape, num_scales, resolution)
        except AppError as error:
            return None, None, None, None, "", _warn(str(error))
        except Exception as error:  # noqa: BLE001 - a bad upload must never take the app down
            return None, None, None, None, "", _unexpected(error)
        size = _size_text(shape.name, os.path.getsize(path), num_bytes, shape, tokenizer.codebook_size)
        status = decoded.message if decoded.glb is not None else _warn(decoded.message)
        preview = vat_path.parent / "input.glb"
        return (shape, str(preview) if preview.is_file() else None, str(decoded.glb) if decoded.glb else None,
                str(vat_path), size, status)

    def on_decode(shape: ShapeTokens | None, num_scales: Any, resolution: Any):
        if shape is None:
            return gr.update(), gr.update()
        try:
            decoded = models.decode(shape, num_scales, resolution)
        except AppError as error:
            return gr.update(), _warn(str(error))
        except Exception as error:  # noqa: BLE001
            return gr.update(), _unexpected(error)
        status = decoded.message if decoded.glb is not None else _warn(decoded.message)
        return (str(decoded.glb) if decoded.glb else None), status

    def on_generate(text: str | None, image: Any, class_label: str | None, seed: Any, cfg: float, resolution: Any):
        try:
            result = models.generate(text=text, image=image, class_label=class_label, seed=seed, cfg_scale=cfg,
                                     resolution=resolution)
        except AppError as error:
            return None, None, _warn(str(error))
        except Exception as error:  # noqa: BLE001
            return None, None, _unexpected(error)
        files = [str(result.glb)] + ([str(result.vat)] if result.vat is not None else [])
        return str(result.glb), files, result.message

    # ---- layout ----
    heavy = dict(concurrency_limit=1, concurrency_id=CONCURRENCY_GROUP)
    with gr.Blocks(title="vat3d", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Reconstruct", id="reconstruct"):
            shape_state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    upload = gr.File(label="Mesh (" + ", ".join(s.lstrip(".").upper() for s in UPLOAD_SUFFIXES)
                                     + f"; up to {models.max_upload_mb:g} MB)", file_types=list(UPLOAD_SUFFIXES),
                                     type="filepath", elem_id="mesh-upload", height=140)
                    status_md = gr.Markdown("Upload a mesh or pick an example.", elem_id="reconstruct-status")
                    if example_files:
                        gr.Examples(examples=[[str(p)] for p in example_files], inputs=[upload],
                                    label="Examples (procedural shapes)")
                    scales = gr.Slider(1, K, value=K, step=1, label=f"Scales to decode (1 = coarsest, {K} = all)",
                                       elem_id="scale-slider", interactive=K > 1)
                    resolution = gr.Dropdown(choices=list(RESOLUTIONS), value=DEFAULT_RESOLUTION,
                                             label="Decode resolution (marching-cubes grid)",
                                             elem_id="decode-resolution")
                    with gr.Accordion("Encoding: effort and rate", open=False):
                        effort = gr.Dropdown(choices=list(EFFORTS), value=DEFAULT_EFFORT, elem_id="encode-effort",
                                             label="Effort (balanced/best search the tokens against the mesh: "
                                                   "seconds, never worse)")
                        max_bytes = gr.Number(value=0, precision=0, minimum=0, elem_id="max-bytes",
                                              label="Max bytes (0: all scales)")
                        target_iou = gr.Number(value=0, minimum=0, maximum=1, elem_id="target-iou",
                                               label="Target held-out IoU (0: off): the shortest prefix that reaches it")
                    size_md = gr.Markdown("", elem_id="vat-size")
                    vat_file = gr.File(label="Token file (.vat)", interactive=False, elem_id="vat-download")
                with gr.Column(scale=2):
                    with gr.Row():
                        input_viewer = gr.Model3D(label="Input", elem_id="input-viewer", height=460)
                        viewer = gr.Model3D(label="Decoded from the tokens", elem_id="recon-viewer", height=460)
            encode_inputs = [upload, scales, resolution, effort, max_bytes, target_iou]
            encode_outputs = [shape_state, input_viewer, viewer, vat_file, size_md, status_md]
            upload.change(on_upload, inputs=encode_inputs, outputs=encode_outputs, **heavy)
            for control in (effort, max_bytes, target_iou):  # re-encode the current upload
                control.change(on_upload, inputs=encode_inputs, outputs=encode_outputs, trigger_mode="always_last",
                               **heavy)
            for control in (scales, resolution):  # a drag sends many changes: only the last one is decoded
                control.change(on_decode, inputs=[shape_state, scales, resolution], outputs=[viewer, status_md],
                               trigger_mode="always_last", **heavy)

        with gr.Tab("Generate", id="generate"):
            inputs = models.condition_inputs()
            available = models.generator is not None
            if not available:
                gr.Markdown(_warn(models.generator_note), elem_id="generate-status")
            else:
                with gr.Row():
                    with gr.Column(scale=1):
                        kinds = [k for k in ("text", "image") if inputs[k]] + (["class"] if inputs["classes"] else [])
                        gr.Markdown(f"This generator takes: **{' + '.join(kinds) or 'nothing (unconditional)'}**"
                                    f" (`cond_type={inputs['cond_type']}`).")
                        prompt = gr.Textbox(label="Text prompt", placeholder="a mug with a handle",
                                            visible=inputs["text"], elem_id="prompt")
                        image = gr.Image(label="Image prompt", type="pil", visible=inputs["image"],
                                         elem_id="image-prompt", height=256)
                        classes = inputs["classes"] or []
                        class_label = gr.Dropdown(choices=classes, value=classes[0] if classes else None,
                                                  label="Class", visible=bool(classes), elem_id="class-label")
                        with gr.Row():
                            seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
                            cfg = gr.Slider(1.0, 10.0, value=CFG_SCALE, step=0.5, label="Guidance (CFG scale)")
                        gen_resolution = gr.Dropdown(choices=list(RESOLUTIONS), value=DEFAULT_RESOLUTION,
                                                     label="Decode resolution")
                        button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        gen_status = gr.Markdown("", elem_id="generate-status")
                        gen_files = gr.File(label="Downloads (GLB, .vat)", file_count="multiple",
                                            interactive=False, elem_id="gen-download")
                    with gr.Column(scale=2):
                        gen_viewer = gr.Model3D(label="Generated shape (GLB)", elem_id="gen-viewer", height=520)
                gen_inputs = [prompt, image, class_label, seed, cfg, gen_resolution]
                button.click(on_generate, inputs=gen_inputs, outputs=[gen_viewer, gen_files, gen_status], **heavy)
                if inputs["text"]:
                    prompt.submit(on_generate, inputs=gen_inputs, outputs=[gen_viewer, gen_files, gen_status],
                                  **heavy)

    demo.queue(max_size=64, default_concurrency_limit=1)
    demo.vat3d_models = models
    demo.vat3d_handlers = {"upload": on_upload, "decode": on_decode, "generate": on_generate}  # for tests
    return demo


def launch_app(demo: "gr.Blocks", *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
               prevent_thread_lock: bool = False, quiet: bool = False):
    """Serve ``demo`` (from :func:`build_app`); the upload limit is enforced by the server too."""
    models: AppModels | None = getattr(demo, "vat3d_models", None)
    wanted: dict[str, Any] = dict(server_name=host, server_port=port, share=share,
                                  prevent_thread_lock=prevent_thread_lock, quiet=quiet, show_error=True,
                                  ssr_mode=False)
    if models is not None:
        wanted["max_file_size"] = f"{models.max_upload_mb:g}mb"
        wanted["allowed_paths"] = [str(models.workdir.root)]
    accepted = inspect.signature(demo.launch).parameters
    return demo.launch(**{k: v for k, v in wanted.items() if k in accepted})
