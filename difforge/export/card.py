"""A Hugging Face model card (README.md) for a model file, so its folder can be uploaded as is.

The card is YAML front matter (``library_name``, ``pipeline_tag``, ``tags``; the licence is left
for the owner to choose) and Markdown: the network, the data, the classes, the training recipe,
the evaluation numbers and how to sample. Everything comes from the model file's metadata and,
when the file sits in a run folder (``runs/NAME/checkpoints/``), from that run's config.yaml,
metrics.csv and log.txt. See https://huggingface.co/docs/hub/model-cards for the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from safetensors import safe_open

from ..atomic import write_text
from ..diffusion.schedule import schedule_name
from .runinfo import RunMetrics, model_description, read_config, read_log, read_metrics, summarize_meta

PIPELINE_TAGS = {"diffusion": "unconditional-image-generation", "classifier": "image-classification"}


def run_dir_of(model_file) -> Optional[Path]:
    """The run folder holding ``model_file`` (``runs/NAME/checkpoints/x.safetensors``), if any."""
    p = Path(model_file).resolve()
    if p.parent.name == "checkpoints" and (p.parent.parent / "config.yaml").exists():
        return p.parent.parent
    return None


def _parameters(model_file) -> int:
    with safe_open(str(model_file), framework="pt") as f:
        return sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def front_matter(meta: Dict[str, Any]) -> str:
    kind = meta.get("kind", "diffusion")
    net = meta.get("network", {}).get("name", "")
    classes = meta.get("data", {}).get("class_names") or []
    tags = ["difforge", "safetensors"]
    if kind == "diffusion":
        tags += ["diffusion", "image-generation", "latent-diffusion" if meta.get("latent") else "pixel-diffusion",
                 "class-conditional" if classes else "unconditional"]
    else:
        tags.append(kind)
    if net:
        tags.append(net.split("-")[0])
    head: Dict[str, Any] = {"library_name": "difforge"}
    if kind in PIPELINE_TAGS:
        head["pipeline_tag"] = PIPELINE_TAGS[kind]
    head["tags"] = tags
    body = yaml.safe_dump(head, sort_keys=False)
    licence = "# license: choose one before uploading (e.g. apache-2.0, mit, cc-by-4.0; https://huggingface.co/docs/hub/repositories-licenses)\n"
    return f"---\n{body}{licence}---\n"


def _data_text(meta: Dict[str, Any], config: Dict[str, Any], log_lines: List[str]) -> List[str]:
    data = meta.get("data", {})
    dc = config.get("data", {})
    source = dc.get("data")
    if config and not source:
        source_text = (f"the built-in procedural industrial-surface defect set ({dc.get('builtin_per_class', '?')} images per class, "
                       f"seed {dc.get('builtin_seed', 0)}, surfaces {dc.get('builtin_materials', 'metal,wood')}; `difforge data defects`)")
    elif source:
        source_text = f"the image folder `{source}`"
    else:
        source_text = "not recorded (the model file is not inside its run folder)"
    lines = [f"- Images: {data.get('image_size', '?')} x {data.get('image_size', '?')} px, {data.get('channels', '?')} channel(s)",
             f"- Training data: {source_text}"]
    link = meta.get("cascade")
    if isinstance(link, dict):  # train/cascade.py: samples come out upscaled by the run's upsampler
        size = link.get("image_size", "?")
        lines[0] += (f"; a cascade: `difforge sample` upscales them x{link.get('scale', '?')} to {size} x {size} px with the "
                     f"upsampler trained beside it (`{link.get('upsampler_relpath', '?')}` from this file; `--upscale none`: the model's own size)")
    seen = [ln.split(" data: ", 1)[1] for ln in log_lines if " data: " in ln][:1]
    if seen:
        lines.append(f"- As loaded: {seen[0]}")
    if dc:
        lines.append(f"- Augmentation: {_augmentation(dc)}")
    classes = data.get("class_names") or []
    lines.append("")
    lines.append("## Classes\n")
    if classes:
        lines.append(f"{len(classes)} classes, sample one with `--class NAME` (or its index):\n")
        lines += [f"{i}. `{name}`" for i, name in enumerate(classes)]
        if meta.get("kind", "diffusion") == "diffusion":
            lines.append(f"\nClass index {len(classes)} is the null class used by classifier-free guidance (`--cfg`).")
    else:
        lines.append("None: the model is unconditional.")
    return lines


def _augmentation(dc: Dict[str, Any]) -> str:
    """What the run did to its images: plain flips (they reach the samples), and the network-conditioned kinds (they do not)."""
    done = ["random horizontal flips"] if dc.get("hflip", True) else []
    if dc.get("augment") and dc.get("augment_p"):
        done.append(f"{dc['augment']} with p = {dc['augment_p']} (the network is told; none in samples)")
    if dc.get("crop_p"):
        done.append(f"crop batches with p = {dc['crop_p']} (the network is told; whole images in samples)")
    return "; ".join(done) or "none"


def _recipe(meta: Dict[str, Any], config: Dict[str, Any]) -> List[str]:
    tc = config.get("train", {})
    d = meta.get("diffusion", {})
    tr = meta.get("train", {})
    lines = []
    if d:
        lines.append(f"- Diffusion: {schedule_name(d)}, T = {d.get('diffusion_steps')}, the network predicts "
                     f"`{d.get('target')}`, loss `{d.get('loss')}`" + (", learned variance" if d.get("learn_sigma") else ""))
        weight = config.get("data", {}).get("mask_weight")
        if isinstance(weight, (int, float)) and weight > 0:
            lines.append(f"- Defect-weighted loss: pixels inside a defect mask weigh {1 + weight:g}x (`--mask-weight {weight:g}`)")
        if d.get("label_dropout") and meta.get("data", {}).get("class_names"):
            lines.append(f"- Label dropout {d['label_dropout']} (for classifier-free guidance)")
    if tc:
        lines.append(f"- Optimizer {tc.get('optimizer')}, lr {tc.get('lr')} ({tc.get('lr_schedule')}, warm-up {tc.get('warmup_steps', 0)} steps), "
                     f"weight decay {tc.get('weight_decay')}, batch {tc.get('batch_size')} x accumulation {tc.get('grad_accum', 1)}, "
                     f"gradient clip {tc.get('grad_clip')}")
        lines.append(f"- EMA decay {tc.get('ema_decay')}, precision {tc.get('precision')}, seed {tc.get('seed')}")
    if tr:
        lines.append(f"- Trained for {tr.get('step', '?')} steps ({tr.get('epoch', '?')} epochs); these are the {meta.get('weights', '?')} weights")
    return lines or ["Not recorded."]


def _metrics(m: RunMetrics) -> List[str]:
    lines = []
    if m.eval:
        lines += ["| metric | last | best (step) |", "|---|---|---|"]
        for name, series in m.eval.items():
            if name.endswith("_std"):
                continue
            best = m.best() if m.best() and m.best()[0] == name else None
            best_text = f"{best[1]:.4g} ({best[2]})" if best else ""
            lines.append(f"| {name} | {series[-1][1]:.4g} (step {series[-1][0]}) | {best_text} |")
    if "loss" in m.train:
        step, loss = m.train["loss"][-1]
        lines.append(("\n" if lines else "") + f"Final training loss {loss:.4g} at step {step}.")
    return lines or ["No evaluation was run (train with `--eval-every N` for FID/KID, or run `difforge eval`)."]


def model_card(model_file) -> str:
    """The README.md text for ``model_file``."""
    model_file = Path(model_file)
    meta = model_description(model_file)
    run = run_dir_of(model_file)
    config = read_config(run) if run else {}
    metrics = read_metrics(run / "metrics.csv") if run else RunMetrics()
    log = read_log(run).lines if run else []
    net = meta.get("network", {})
    name = (run.name if run else model_file.stem)
    classes = meta.get("data", {}).get("class_names") or []
    fname = model_file.name
    kind = meta.get("kind", "diffusion")
    n_params = _parameters(model_file)
    out = [front_matter(meta), f"# {name}\n"]
    what = {"diffusion": "A diffusion model", "classifier": "A noisy-image classifier (for classifier guidance)", "vae": "A VAE (latent codec)"}
    cond = f"class-conditional on {len(classes)} classes" if classes else "unconditional"
    out.append(f"{what.get(kind, 'A model')} trained with [difforge](https://pypi.org/project/difforge/): "
               f"`{net.get('name', '?')}` network, {n_params / 1e6:.2f}M parameters, {cond}. "
               f"`{fname}` holds the weights and, in its metadata, everything needed to use them.\n")
    out.append("## Network\n")
    out += [f"| {k} | {v} |" if i else f"| | |\n|---|---|\n| {k} | {v} |" for i, (k, v) in enumerate(summarize_meta(meta))]
    out.append("\n## Data\n")
    out += _data_text(meta, config, log)
    out.append("\n## Training recipe\n")
    out += _recipe(meta, config)
    out.append("\n## Metrics\n")
    out += _metrics(metrics)
    out.append("\n## How to sample\n")
    out.append(_how_to_sample(fname, kind, classes))
    return "\n".join(out) + "\n"


def _how_to_sample(fname: str, kind: str, classes: List[str]) -> str:
    if kind != "diffusion":
        return f"This {kind} model file is used by other difforge commands (see `difforge info {fname}`)."
    cls = f" --class {classes[0]}" if classes else ""
    cls_py = f', class_label="{classes[0]}"' if classes else ""
    return (
        "```bash\npip install difforge\n"
        f"difforge sample {fname} --num 16{cls} --grid --out samples/\n"
        f"difforge export-onnx {fname} model.onnx   # optional: ONNX Runtime deployment\n```\n\n"
        "```python\nfrom difforge.pipeline import Pipeline\n\n"
        f'pipe = Pipeline.from_checkpoint("{fname}")\n'
        f'out = pipe.generate(num=8{cls_py}, seed=0)\n'
        "out.pil()[0].save(\"sample.png\")\n```"
    )


def write_card(model_file, out=None) -> Path:
    """Write the card to ``out`` (default: README.md beside the model file); return its path."""
    out = Path(out) if out else Path(model_file).parent / "README.md"
    return write_text(out, model_card(model_file))


__all__ = ["model_card", "write_card", "front_matter", "run_dir_of"]
