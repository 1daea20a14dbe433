"""``network: auto``: the widest UNet that sees every training image often enough in the time budget;
a UNet's ``patch_size`` from the image size (:func:`choose_patch`); a built-in text run's layout map and
encoder depth (:func:`choose_text_defaults`); ``channels_last: auto``.

With ``max_minutes`` the candidates (:data:`CANDIDATES`, narrowest first) are timed (:func:`probe_clock`) by a short
probe: :data:`PROBE_STEPS` optimizer steps (after one warm-up step) of each at the run's real
batch size, image size and class count, on the run's device. A candidate fits when
``budget / step_time * global_batch / images >= EPOCHS_WANTED``; the widest that fits is chosen
(probing stops at the first that does not, since wider ones are slower), and the narrowest when
none does. Every number is printed. Without a budget there is nothing to size against and the
``fast`` preset's network is used. Under DDP the step times are averaged over ranks, so every
rank chooses the same network. The probe runs before the budget's clock starts.
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from ..config import Config
from ..models import registry
from ..runtime import autocast_factory, resolve_device, resolve_precision
from .distributed import DistInfo, all_reduce_mean, device_for
from .logging import get_logger
from .text_cond import ENCODER_DEFAULTS

CANDIDATES = ("unet-tiny", "unet-small", "unet")  # narrowest first
EPOCHS_WANTED = 30  # passes over the data the budget must allow
PROBE_STEPS = 2
FALLBACK = "unet-tiny"  # without a budget (the fast preset's network)


def probe_clock(device: torch.device):
    """What the probes time with. On a GPU the wall clock (after a synchronize). On a CPU the
    process's CPU seconds per torch thread: the same as wall seconds on a quiet machine, but a
    busy shared machine (another job, a test run) does not make a network look slower than it is
    and so does not flip a choice; only the work of the step is counted."""
    if device.type == "cuda":
        return time.perf_counter
    threads = max(1, torch.get_num_threads())
    return lambda: time.process_time() / threads


def probe_step_seconds(name: str, config: Config, data, device: torch.device, steps: int = PROBE_STEPS,
                       channels_last: bool = False, text=None) -> float:
    """Seconds per optimizer step (forward, backward, AdamW) of network ``name`` at the run's batch,
    in the NCHW or the channels_last memory layout, in the run's precision (its autocast: which
    layout is faster depends on it; measured with unet-tiny at 64 px on an AMX CPU: channels_last
    7% faster in fp32 but 50% slower in bf16, so a probe in fp32 picked the slower layout for a
    bf16 run and it made 2,124 steps in 12 minutes instead of 2,929). ``text``: :func:`~.text_cond.probe_text`'s
    result when the caller probes several networks (the built-in set's captions take seconds to make)."""
    dc, tc = config.data, config.train
    from .text_cond import probe_text

    text_options, text = text or probe_text(config, data, tc.batch_size)  # a text run's cross-attention and encoder are timed too
    options = dict(config.model.network_options, image_size=dc.image_size, in_channels=int(data.images.shape[1]),
                   num_classes=data.num_classes, learn_sigma=config.model.learn_sigma)
    options.update(text_options)
    net = registry.build(name, **options).to(device)
    text = {k: v.to(device) for k, v in text.items()}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    idx = torch.arange(tc.batch_size) % len(data.images)
    x = data.images[idx].to(device).float().div(127.5).sub(1.0)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = data.labels[idx].to(device) if data.labels is not None and data.num_classes else None
    t = torch.linspace(0, config.diffusion.diffusion_steps - 1, len(idx), device=device).long()
    autocast = autocast_factory(resolve_precision(config.train.precision, device), device)
    clock = probe_clock(device)
    times = []
    for i in range(steps + 1):  # the first step (allocations, kernel choice) is not timed
        start = clock()
        with autocast():
            out = net(x, t, y, **text)
        (out[:, : x.shape[1]].float() - x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(clock() - start)
    return sum(times) / len(times)


def choose_network(config: Config, data, task=None, dist: Optional[DistInfo] = None) -> Config:
    """``config`` with ``network`` set to the chosen UNet preset (see the module docstring)."""
    log, tc = get_logger(), config.train
    if not tc.max_minutes or config.latent.latent:
        why = "no --max-minutes to size it against" if not tc.max_minutes else "a latent run"
        log.info(f"network auto: {FALLBACK} ({why})")
        return config.override(network=FALLBACK)
    dist = dist or DistInfo()
    device = resolve_device(device_for(dist, tc.device))
    n, seconds = len(data.images), tc.max_minutes * 60
    global_batch = tc.batch_size * tc.grad_accum * dist.world_size
    chosen, rows = CANDIDATES[0], []
    state = torch.get_rng_state()
    from .text_cond import probe_text

    text = probe_text(config, data, tc.batch_size)  # once for every candidate
    for name in CANDIDATES:
        per_step = probe_step_seconds(name, config, data, device, text=text) * tc.grad_accum
        per_step = float(all_reduce_mean(torch.tensor([per_step], dtype=torch.float64), dist)[0])
        epochs = seconds / per_step * global_batch / n
        rows.append(dict(name=name, step=per_step, epochs=epochs))
        if epochs < EPOCHS_WANTED:
            break
        chosen = name
    torch.set_rng_state(state)  # the probe leaves the run's randomness as it was
    listed = "; ".join(f"{r['name']} {r['step']:.2f} s/step -> {r['epochs']:.0f} epochs" for r in rows)
    log.info(f"network auto: {chosen} (the widest that sees each of the {n} images >= {EPOCHS_WANTED} times "
             f"in {tc.max_minutes:g} min at batch {global_batch}; probe: {listed})")
    return config.override(network=chosen)


PATCH_FROM = 64  # image size from which a UNet folds 2 x 2 pixels into channels (patch_size 2)
INPUT_WIDTH = {"diffusion": 1, "sr": 2}  # the tasks that fold: the network's input channels per image channel (sr: x_t + the up-sampled low-res image)


def choose_patch(config: Config, data, pretrain: Optional[str] = None) -> Config:
    """A new run's UNet ``patch_size`` when the network options do not set it (:class:`~difforge.models.unet.UNet`).

    From :data:`PATCH_FROM` px a UNet folds 2 x 2 pixels into channels and works at half the size:
    about a quarter of the compute per image, so a CPU budget buys ~4x the steps and sampling is
    as much faster. Measured by ``benchmarks/quality_budget.py`` on the built-in defects at 64 px,
    12 CPU-minutes: 1,471 steps instead of 388, judge distance 51 instead of 71 (CFG 3), recall
    0.61 instead of 0.45, 100 images in 39 s instead of 242 s (README, "Quality per CPU-minute"). Folding 4 x 4 (48 values of an
    RGB image into unet-tiny's 32 channels) lost the detail (samples were noise), so the fold is 2
    and only where 4 x the input channels fit the first level's width. A fine-tune takes its file's fold
    (the weights must fit); latent runs work on small latents and do not fold. The choice is
    printed and goes into the config's network options (config.yaml; a resume keeps it).
    """
    mc, options = config.model, config.model.network_options
    names = CANDIDATES if mc.network == "auto" else (mc.network,)
    opts = [registry.options(n) for n in names]
    if "patch_size" in options or config.latent.latent or not all("patch_size" in o and "channel_mult" in o for o in opts):
        return config
    if pretrain:
        from ..modelfile import read_metadata

        patch = int(read_metadata(pretrain).get("network", {}).get("config", {}).get("patch_size", 1))
        why = f"as {pretrain}"
    else:
        channels = int(data.images.shape[1]) * INPUT_WIDTH.get(config.train.task, 1)
        base = min(int(options.get("base_channels", o["base_channels"])) for o in opts)
        patch = 2 if config.data.image_size >= PATCH_FROM and 4 * channels <= base else 1
        why = f"{config.data.image_size} px" + (f" >= {PATCH_FROM}: folds 2 x 2 pixels, a quarter of the work per image" if patch > 1 else "")
    if patch == 1 and not pretrain:
        return config
    get_logger().info(f"patch size: {patch} ({why}; --patch-size 1 keeps full resolution)")
    return config.override(network_options={**options, "patch_size": patch})


# The layout map's grid (models/text_encoder.TextLayout) of a new built-in text run on a UNet. Measured with
# benchmarks/text_conditioning.py (12 CPU-minutes, 32 px, unet-tiny; position judged by a segmenter of the defect,
# whose ceiling on real images is 0.91): at guidance 3 position 0.20 -> 0.71 on seen captions and 0.21 -> 0.71 on
# held-out combinations, defect type 0.99 -> 0.90; as the default (guidance 4), two training seeds: seen
# 0.93 / 0.92 defect, 0.80 / 0.81 position. A grid of 8 was no better (0.72 / 0.62), nor one of 3 (0.70 / 0.77).
TEXT_LAYOUT = 4
# The built-in encoder's transformer layers in a new such run (train/text_cond.ENCODER_DEFAULTS' 2 stay what a run
# that does not record its depth was built with). Same benchmark, one machine (AMD EPYC, ~3,000 steps), defect type
# on seen captions / held-out combinations and position on seen captions, mean over training seeds:
# 2 layers (3 seeds) 0.86 / 0.22 / 0.80; 1 layer (4 seeds) 0.92 / 0.26 / 0.76; 0 layers (3 seeds) 0.94 / 0.35 / 0.75
# (held-out material 0.95 / 0.99 / 0.99). One layer gets the defect type of a caption right as often as none (over
# the 0.9 target where 2 layers were not) and keeps a transformer layer, as the issue asks of the encoder.
TEXT_DEPTH = 1


def choose_text_defaults(config, pretrain: Optional[str] = None):
    """``config`` with the UNet option ``text_layout`` and the built-in encoder's ``depth`` set for a
    new built-in text run: the caption's words also draw a coarse map that is added to the first
    features, so that "at the top left" can say *where* (a per-channel shift and 8 x 8
    cross-attention barely could: see :data:`TEXT_LAYOUT`), and the encoder has :data:`TEXT_DEPTH`
    layers. Set in the config's network options, so config.yaml records them and a resumed run
    (which does not come here) keeps what it was built with; a fine-tune takes its file's values,
    an explicit ``--network-option text_layout=G`` (0: off) or ``text_encoder={"depth": D}`` is kept,
    and a CLIP run (unmeasured) or a network without the option is left as it is."""
    mc = config.model
    names = CANDIDATES if mc.network == "auto" else (mc.network,)
    if mc.text_encoder != "builtin" or not all("text_layout" in registry.options(n) for n in names):
        return config
    options = dict(mc.network_options)
    encoder = dict(options.get("text_encoder") or {})
    grid, depth, why = TEXT_LAYOUT, TEXT_DEPTH, "words place what they say"
    if pretrain:
        from ..modelfile import read_metadata

        built = read_metadata(pretrain).get("network", {}).get("config", {})
        grid, depth, why = int(built.get("text_layout", 0)), int((built.get("text_encoder") or {}).get("depth", ENCODER_DEFAULTS["depth"])), f"as {pretrain}"
    if "text_layout" not in options:
        get_logger().info(f"text layout: {grid} x {grid} map of the caption's words ({why}; --network-option text_layout=0 turns it off)"
                          if grid else f"text layout: off ({why})")
        options["text_layout"] = grid
    if isinstance(options.get("text_encoder", {}), dict) and "depth" not in encoder:
        get_logger().info(f"text encoder: {depth} transformer layer{'s' if depth != 1 else ''} "
                          f"({'as ' + pretrain if pretrain else 'measured'}; --network-option 'text_encoder={{\"depth\": 2}}' sets it)")
        options["text_encoder"] = {**encoder, "depth": depth}
    return config.override(network_options=options)


CHANNELS_LAST_GAIN = 1.05  # channels_last must be at least this much faster to be chosen


def choose_memory_format(config: Config, data, dist: Optional[DistInfo] = None) -> Config:
    """``channels_last: auto``: the memory layout that trains the run's network faster here.

    Which layout wins depends on the network's widths, the image size and the machine (on the
    AVX2 CPUs measured in models/unet.py channels_last loses for most widths; with oneDNN's
    AVX-512/AMX kernels or on a GPU it often wins), so it is measured, not fixed: the probe times
    :data:`PROBE_STEPS` optimizer steps in each layout and takes channels_last only when it is
    :data:`CHANNELS_LAST_GAIN` times faster. Only a run with a time budget probes (the seconds are
    worth saving there, and its steps depend on time anyway); a run without one keeps NCHW, so
    step-limited runs stay reproducible whatever the machine's load. The choice goes into the config.
    """
    log, tc = get_logger(), config.train
    if tc.channels_last != "auto":
        return config
    plain = tc.task == "diffusion" and not config.latent.latent and not config.model.text_encoder
    if not tc.max_minutes or not plain:
        why = "no --max-minutes" if not tc.max_minutes else f"the probe times plain pixel diffusion, not this {tc.task} run"
        log.info(f"channels-last auto: off ({why})")
        return config.override(channels_last=False)
    dist = dist or DistInfo()
    device = resolve_device(device_for(dist, tc.device))
    state = torch.get_rng_state()
    seconds = []
    for layout in (False, True):
        s = probe_step_seconds(config.model.network, config, data, device, channels_last=layout)
        seconds.append(float(all_reduce_mean(torch.tensor([s], dtype=torch.float64), dist)[0]))
    torch.set_rng_state(state)
    chosen = seconds[0] >= CHANNELS_LAST_GAIN * seconds[1]
    log.info(f"channels-last auto: {'on' if chosen else 'off'} (probe of {config.model.network}: NCHW {seconds[0]:.3f} s/step, "
             f"channels_last {seconds[1]:.3f} s/step)")
    return config.override(channels_last=chosen)


__all__ = ["CANDIDATES", "CHANNELS_LAST_GAIN", "EPOCHS_WANTED", "PATCH_FROM", "TEXT_LAYOUT", "choose_memory_format", "choose_network",
           "choose_patch", "choose_text_defaults", "probe_step_seconds"]
