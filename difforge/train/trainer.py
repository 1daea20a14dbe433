"""The training loop: one loop for every model kind (what differs is a :mod:`~difforge.train.tasks` Task).

Randomness is counter-based (:mod:`difforge.train.rng`): every optimizer step seeds its own
generator from (seed, step), and every epoch's data order from (seed, epoch). A resumed run
therefore needs only the step counter, weights, EMA and optimizer state to continue *the same*
run, bit for bit.

The loop owns autocast, accumulation, DDP and the reduction: a task returns per-sample terms,
``terms["loss"].mean()`` is minimised, and the mean of every term is a metrics.csv column.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..atomic import write_text
from ..config import Config
from ..data.source import TrainingImages, load_training_images
from ..errors import CheckpointError, ConfigError, UserError
from ..runtime import autocast_factory, resolve_device, resolve_precision, set_threads
from ..modelfile import load_weights_into, save_model_file
from . import checkpoint as ckpt, guards
from .compiling import before_step, compile_network
from .distributed import DistInfo, all_reduce_mean, device_for, init_from_env, shutdown, wrap_ddp
from .ema import EMA
from .finetune import load_pretrained
from .logging import MetricsCSV, announce, attach_run_log, detach, get_logger, progress_bar
from .optim import build_optimizer, set_lr
from .batches import BatchPlan
from .rng import INIT, StepRNG, mix_seed, seed_global
from .report import write_report
from .run_config import load_run_config
from .tensorboard import TensorBoardWriter
from .budget import Pacer, total_steps
from .cascade import Upsampler, choose_cascade, split_threads
from .noise_shift import choose_noise_shift
from .settle import settle_run
from .validation import choose_ema
from .stopping import stop_on_signals
from .tasks import Snapshot, make_task

STATE_FILE = "state.safetensors"
EMA_FILE = "ema.safetensors"
LAST_FILE = "last.safetensors"


@dataclass
class TrainResult:
    run_dir: Path
    model_file: Path  # EMA weights: the file to sample from
    steps: int
    epochs_done: float
    last_loss: float
    interrupted: bool


class Trainer:
    """Train a model on an image folder (or the built-in set) into ``runs_dir/run``.

    What is trained (a diffusion model, a VAE, a noisy classifier) is the config's ``task``
    (see :mod:`difforge.train.tasks`); this loop is the same for all of them.

    ``Trainer(config, **overrides)`` or ``Trainer(data="folder", run="x", max_steps=1000)``;
    ``resume=RUN_DIR`` continues a run from its last checkpoint (its config.yaml is used, with
    the overrides applied on top); ``pretrain=FILE`` starts from a model file's weights.
    """

    def __init__(
        self,
        config: Optional[Config] = None,
        *,
        resume: Optional[str] = None,
        pretrain: Optional[str] = None,
        progress: bool = True,
        callbacks: Optional[List[Callable]] = None,
        clock: Callable[[], float] = time.perf_counter,
        **overrides,
    ):
        self.resume_dir = Path(resume) if resume else None
        if self.resume_dir is not None:
            if not (self.resume_dir / "checkpoints" / STATE_FILE).exists():
                raise CheckpointError(f"{self.resume_dir} has no checkpoints/{STATE_FILE} to resume from")
            base = load_run_config(self.resume_dir / "config.yaml")  # settings added since keep what the run meant
            overrides = {k: v for k, v in overrides.items() if v is not None}
            overrides.setdefault("run", self.resume_dir.name)
            overrides.setdefault("runs_dir", str(self.resume_dir.parent))
        else:
            base = config or Config()
        self.config = base.override(**overrides)
        self.pretrain = pretrain
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.clock = clock  # the time budget's clock (tests pass a fake one)
        self.elapsed_before = 0.0  # training seconds of the run before this resume
        self._stop_requested = False
        self._compile_checked, self.compiled_net, self.compile_trial = False, None, None  # train/compiling.py
        self.log = get_logger()
        self.dist = DistInfo()
        self.tb = None  # a TensorBoardWriter on rank 0 with tensorboard=True
        self.val, self.chosen_ema = None, None  # held-out images; the EMA they chose (train/validation.py)

    # -- public helpers -------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint and return from :meth:`fit`."""
        self._stop_requested = True

    @property
    def run_dir(self) -> Path:
        return Path(self.config.train.runs_dir) / self.config.train.run

    # -- set-up ---------------------------------------------------------------------------
    def _build(self, data: TrainingImages):
        tc = self.config.train
        self.device = resolve_device(device_for(self.dist, tc.device))
        self.precision = resolve_precision(tc.precision, self.device)
        self.autocast = autocast_factory(self.precision, self.device)
        torch.manual_seed(mix_seed(tc.seed, 0, INIT))  # the initial weights depend on the seed only
        self.net = self.task.build(data, self.device)
        if tc.channels_last is True:  # "auto" is settled before this (train/settle.py)
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.net.parameters(), tc.optimizer, tc.lr, tc.weight_decay, self.device)
        chosen_later = self.val is not None
        self.ema = EMA(self.net, tc.ema_decay, tc.ema_warmup, extra=tc.ema_extra if chosen_later else (),
                       power=tc.ema_power if chosen_later else ())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @property
    def model_meta(self):
        return self.task.meta

    def snapshot(self) -> Snapshot:
        """What previews and evaluations see: the EMA weights with the model's description."""
        return Snapshot(self.chosen_ema or self.ema.shadow, self.task.meta, self.device, self.precision, self.run_dir)

    def _prepare_run_dir(self) -> None:
        rd = self.run_dir
        if self.resume_dir is None and (rd / "checkpoints" / STATE_FILE).exists():
            raise ConfigError(f"run folder {rd} already holds a run; continue it with --resume {rd} or choose another --run")
        (rd / "checkpoints").mkdir(parents=True, exist_ok=True)
        (rd / "samples").mkdir(exist_ok=True)
        write_text(rd / "config.yaml", self.config.to_yaml())

    # -- checkpoints ----------------------------------------------------------------------
    def _save(self, step: int, epoch: float, loss: float) -> None:
        cdir = self.run_dir / "checkpoints"
        guards.check_weights(step, cdir, self.net.state_dict(), self.ema.state_dict())  # keep the last good files
        meta = dict(self.model_meta, train={"step": step, "epoch": epoch, "run": self.config.train.run})
        ckpt.save_training_state(
            cdir / STATE_FILE,
            model=self.net.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            extra_tensors={**self.task.state_tensors(), **self.ema.extra_tensors()},
            model_meta=dict(meta, weights="ema"),
            loop={"step": step, "ema_updates": self.ema.updates, "last_loss": loss, "scaler": self.scaler.state_dict(),
                  "elapsed_s": self.pacer.used if getattr(self, "pacer", None) else self.elapsed_before},
        )
        save_model_file(cdir / EMA_FILE, self.ema.state_dict(), dict(meta, weights="ema"))
        save_model_file(cdir / LAST_FILE, self.net.state_dict(), dict(meta, weights="raw"))

    def _save_numbered(self, step: int, epoch: float) -> None:
        meta = dict(self.model_meta, train={"step": step, "epoch": epoch, "run": self.config.train.run}, weights="ema")
        save_model_file(self.run_dir / "checkpoints" / f"step_{step:07d}.safetensors", self.ema.state_dict(), meta)

    def _restore(self) -> int:
        state = ckpt.load_training_state(self.run_dir / "checkpoints" / STATE_FILE)
        load_weights_into(self.net, state["model"], self.run_dir)
        self.ema.load_state_dict(state["ema"], state["loop"]["ema_updates"], state["extra"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["loop"].get("scaler"):
            self.scaler.load_state_dict(state["loop"]["scaler"])
        self.task.load_state_tensors(state["extra"])
        self.elapsed_before = float(state["loop"].get("elapsed_s", 0.0))
        return int(state["loop"]["step"])

    def _load_pretrained(self) -> None:
        meta, note = load_pretrained(self.net, self.pretrain)
        self.ema.load_state_dict(self.net.state_dict(), self.ema.updates)  # every tracked EMA starts there
        self.log.info(f"fine-tuning from {self.pretrain} (step {meta.get('train', {}).get('step', '?')})" + (f"; {note}" if note else ""))

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        c = self.config
        started = time.time()  # what is logged from here goes into log.txt, also before the run folder exists
        set_threads()
        self.dist = init_from_env(c.train.device)
        main = self.dist.is_main
        self.config = c = choose_cascade(c, self.resume_dir is None, self.dist, self.log if main else None, self.pretrain)
        c, shift_note = choose_noise_shift(c, self.resume_dir is None, self.pretrain)  # at the settled size, before the task's schedule
        self.config = c
        upsampler_threads = split_threads()[1] if c.train.cascade is True else 0  # train/cascade.py
        self.task = make_task(c, self.dist)
        data = load_training_images(c.data, progress=self.progress and main)  # at the settled size: a cascade's half size
        self.config, data, self.val = settle_run(c, data, self.task, self.dist, self.resume_dir is None, self.pretrain)
        c = self.config
        tc = c.train
        self.task.check_data(data)
        if main and shift_note:
            self.log.info(shift_note)
        self._build(data)
        if main:
            self._prepare_run_dir()
        log_handler = attach_run_log(self.run_dir, since=started) if main else None
        if not main:
            self.progress = False
        result, upsampler = None, None
        try:
            if main and upsampler_threads:
                upsampler = Upsampler.start(c, upsampler_threads, self.log)
            start_step = 0
            if self.resume_dir is not None:
                start_step = self._restore()
                self.log.info(f"resuming {self.run_dir} at step {start_step}")
            elif self.pretrain:
                self._load_pretrained()
            self.train_net = self._wrap_ddp()
            plan = BatchPlan(len(data.images), tc.batch_size, tc.seed, self.dist.world_size, self.dist.rank)
            total = total_steps(tc, plan.per_epoch)
            metrics = None
            if main:
                metrics = MetricsCSV(self.run_dir / "metrics.csv")
                metrics.truncate_after(start_step)
                announce(self, data, total or f"(as many as fit in {tc.max_minutes:g} min)")
                if tc.tensorboard:
                    self.tb = TensorBoardWriter(self.run_dir, config_text=self.config.to_yaml())
            with stop_on_signals(lambda: self._stop_requested, self.request_stop):
                result = self._loop(data, plan, total, start_step, metrics)
        finally:
            if upsampler is not None:
                upsampler.finish(stopped_early=result is None or result.interrupted)
            if self.tb is not None:
                self.tb.close()
            detach(log_handler)
            shutdown(self.dist, finished=result is not None)
        return result

    def _wrap_ddp(self, compiled: bool = False) -> torch.nn.Module:
        """The module the loop calls: the network, or its compiled form once check_in_step agrees (compiling.py)."""
        if self.config.train.compile and self.compiled_net is None and not self._compile_checked:
            self.compiled_net = compile_network(self.net, self.device)  # it shares self.net's weights
        return wrap_ddp(self.compiled_net if compiled else self.net, self.dist, self.device)

    def _step(self, data: TrainingImages, plan: BatchPlan, step: int) -> Dict[str, float]:
        """One optimizer step; the mean of every per-sample term over its micro-batches ("loss" first)."""
        tc = self.config.train
        if self.compiled_net is not None:
            before_step(self, data, plan, step)  # the compile check, and compile: auto's timed trial
        rng = StepRNG.for_step(tc.seed, step, plan.global_batch, plan.local_slice())
        seed_global(tc.seed, step)  # dropout and any other global-RNG use
        sums: Dict[str, float] = {}
        for micro in range(tc.grad_accum):
            batch = plan.batch(step * tc.grad_accum + micro, self.task, data, rng, self.device, tc.channels_last is True)
            sync = contextlib.nullcontext()
            if self.dist.enabled and micro < tc.grad_accum - 1:
                sync = self.train_net.no_sync()  # all-reduce only on the last micro-batch
            with sync:
                with self.autocast():
                    terms = self.task.loss(self.train_net, batch, rng)
                loss = terms["loss"].mean()
                self.scaler.scale(loss / tc.grad_accum).backward()
            others = [k for k in terms if k != "loss"]  # logged only: one host sync for all of them
            means = torch.stack([terms[k].detach().float().mean() for k in others]).tolist() if others else []
            for k, v in zip(["loss", *others], [loss.item(), *means]):
                sums[k] = sums.get(k, 0.0) + v / tc.grad_accum
        guards.check_loss(sums["loss"], step, self.run_dir / "checkpoints")  # before the step: no NaN reaches the weights
        self.scaler.unscale_(self.optimizer)
        if not self.scaler.is_enabled():  # fp16's scaler skips steps with inf gradients by itself
            guards.check_grads(self.net.parameters(), step, self.run_dir / "checkpoints")
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), tc.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.net)
        return sums

    def _loop(self, data, plan, total, start_step, metrics) -> TrainResult:
        tc = self.config.train
        main = self.dist.is_main
        self.net.train()
        step, loss, ema_loss = start_step, float("nan"), None
        terms: Dict[str, float] = {}
        per_epoch_steps = plan.per_epoch / tc.grad_accum
        self.pacer = pacer = Pacer(total=total, minutes=tc.max_minutes, schedule=tc.lr_schedule, warmup_steps=tc.warmup_steps,
                                   min_ratio=tc.min_lr_ratio, start_step=start_step, elapsed_before=self.elapsed_before, clock=self.clock)
        t0 = time.perf_counter()
        window_t, window_imgs = t0, 0
        bar = progress_bar(total, start_step, self.progress)
        interrupted = False
        done = total is not None and step >= total
        pacer.start()
        try:
            while not done:
                set_lr(self.optimizer, tc.lr * pacer.lr(step))
                terms = self._step(data, plan, step)
                step += 1
                # one small all-reduce: the mean of every term and of the time used, and whether any rank must stop
                shared = all_reduce_mean(torch.tensor([*terms.values(), float(self._stop_requested), pacer.elapsed()], dtype=torch.float64), self.dist).tolist()
                terms = dict(zip(terms, shared))
                loss, self._stop_requested = terms["loss"], shared[-2] > 0
                done = pacer.after_step(step, shared[-1])
                bar.total = pacer.planned_steps(step) or bar.total
                window_imgs += plan.global_batch * tc.grad_accum
                ema_loss = loss if ema_loss is None else 0.95 * ema_loss + 0.05 * loss
                epoch = step / per_epoch_steps
                if main and (step % tc.log_every == 0 or step == total):
                    now = time.perf_counter()
                    ips = window_imgs / max(now - window_t, 1e-9)
                    window_t, window_imgs = now, 0
                    lr = self.optimizer.param_groups[0]["lr"]
                    row = {"step": step, "epoch": round(epoch, 4), **terms, "lr": lr, "images_per_s": round(ips, 2),
                           "elapsed_s": round(now - t0, 2), **pacer.row()}
                    metrics.log(row)
                    if self.tb is not None:
                        self.tb.log_metrics(step, row, time_fraction=pacer.time_fraction() if pacer.timed else None)
                    others = {k: f"{v:.4g}" for k, v in terms.items() if k != "loss"} | ({"time": f"{pacer.time_fraction():.0%}"} if pacer.timed else {})
                    bar.set_postfix(loss=f"{ema_loss:.4f}", **others, lr=f"{lr:.2e}", img_s=f"{ips:.1f}", epoch=f"{epoch:.1f}")
                bar.update(1)
                for cb in self.callbacks:
                    cb(self, step, loss)
                if main:
                    self._periodic_files(step, epoch, terms, math.inf if total is None else total, per_epoch_steps, data)
                if done:
                    self.log.info(f"stopped after {step} steps: {pacer.reason}")
                    break
                if self._stop_requested:
                    interrupted = True
                    break
        finally:
            bar.close()
        epoch = step / per_epoch_steps
        model_file = self.run_dir / "checkpoints" / EMA_FILE
        if not main:
            return TrainResult(self.run_dir, model_file, step, epoch, loss, interrupted)
        self._save(step, epoch, loss)
        if terms:
            self.log.info(self._terms_line(step, terms))
        if interrupted:
            self.log.info(f"stopped at step {step}; resume with: difforge train --resume {self.run_dir}")
        else:
            self.chosen_ema = choose_ema(self, step, epoch)
            preview = self._preview_safely(step, data)
            if preview:
                self.log.info(f"preview grid: {preview}")
        self.log.info(f"model file: {model_file}")
        try:  # after the line above: the report reads it to show the run finished
            self.log.info(f"report: {write_report(self.run_dir)}")
        except (UserError, OSError) as e:
            self.log.info(f"report not written: {e}")
        return TrainResult(self.run_dir, model_file, step, epoch, loss, interrupted)

    @staticmethod
    def _terms_line(step: int, terms: Dict[str, float]) -> str:
        return f"step {step}: " + ", ".join(f"{k} {v:.5g}" for k, v in terms.items())

    def _periodic_files(self, step, epoch, terms, total, per_epoch_steps, data) -> None:
        """Numbered snapshots, resumable checkpoints and previews at their intervals (rank 0 only)."""
        tc = self.config.train
        if tc.save_every and step % tc.save_every == 0:
            self._save_numbered(step, epoch)
        if tc.save_every_epochs and step % max(1, round(per_epoch_steps)) == 0:
            ep = round(epoch)
            if ep >= tc.save_start and ep % tc.save_every_epochs == 0:
                self._save_numbered(step, epoch)
        if step % tc.checkpoint_every == 0 and step < total:
            self._save(step, epoch, terms["loss"])
            self.log.info(self._terms_line(step, terms))
        if tc.preview_every and step % tc.preview_every == 0 and step < total:
            self._preview_safely(step, data)
        if tc.eval_every and step % tc.eval_every == 0:
            self._evaluate(step, data)

    def _evaluate(self, step: int, data: TrainingImages) -> None:
        """The task's evaluation numbers as extra columns of metrics.csv (rank 0 only)."""
        was_training = self.net.training
        try:
            row = self.task.evaluate(self.snapshot(), step, data)
        finally:
            self.net.train(was_training)
        if row:
            MetricsCSV(self.run_dir / "metrics.csv").log({"step": step, **row})
            if self.tb is not None:
                self.tb.log_metrics(step, row)

    def _preview_safely(self, step: int, data: TrainingImages) -> Optional[Path]:
        was_training = self.net.training
        try:
            path = self.task.preview(self.snapshot(), step, data)
        finally:
            self.net.train(was_training)
        if path and self.tb is not None:
            self.tb.add_image_file(path, step)
        return path
