"""--compile: torch.compile'd training gives the eager run's numbers within float round-off;
``compile: auto`` compiles only long runs with a working toolchain; a compiled run resumes exactly."""

import contextlib
import csv
import functools
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from difforge.config import Config
from difforge.errors import ConfigError
from difforge.train import compiling
from difforge.train import trainer as trainer_module
from difforge.train.trainer import Trainer

from ..conftest import tiny_overrides


def _losses(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_matches_eager(tmp_path):
    eager = Trainer(progress=False, **tiny_overrides(tmp_path, run="eager", max_steps=4, ema_select=False)).fit()
    compiled = Trainer(progress=False, **tiny_overrides(tmp_path, run="compiled", max_steps=4, ema_select=False, compile=True)).fit()
    a, b = _losses(eager.run_dir), _losses(compiled.run_dir)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=1e-3, abs=1e-5)
    wa = load_file(eager.run_dir / "checkpoints" / "last.safetensors")
    wb = load_file(compiled.run_dir / "checkpoints" / "last.safetensors")
    assert wa.keys() == wb.keys()  # no "_orig_mod." prefixes: the file is the plain network's
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) < 1e-3


def test_compile_is_auto_or_a_bool():
    with pytest.raises(ConfigError, match="compile"):
        Config().override(compile="yes").validate()
    assert Config().train.compile == "auto"
    for value in (True, False, "auto"):
        Config().override(compile=value).validate()


NO_COMPILER = shutil.which("c++") is None and shutil.which("g++") is None


@pytest.mark.slow
@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_run_resumes_bit_exactly(tmp_path):
    """Stopped at step 3 and resumed (the resumed process compiles again), a compiled run ends with
    exactly the weights and optimizer state of an uninterrupted compiled run."""
    opts = dict(max_steps=6, ema_select=False, compile=True, lr_schedule="cosine")
    full = Trainer(progress=False, **tiny_overrides(tmp_path, run="full", **opts)).fit()

    def stop_at_3(trainer, step, loss):
        if step == 3:
            trainer.request_stop()

    part = Trainer(progress=False, callbacks=[stop_at_3], **tiny_overrides(tmp_path, run="part", **opts)).fit()
    assert part.interrupted and part.steps == 3
    Trainer(resume=str(part.run_dir), progress=False).fit()
    assert _losses(full.run_dir) == _losses(part.run_dir)
    a, b = (load_file(str(r.run_dir / "checkpoints/state.safetensors")) for r in (full, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _perturbed_unet_tiny():
    from difforge.models import registry

    torch.manual_seed(0)
    net = registry.build("unet-tiny", image_size=16, in_channels=1, num_classes=3)
    with torch.no_grad():  # away from the zero-initialised output layers, so every layer has a gradient
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, w = torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)
    t, y = torch.randint(0, 1000, (8,)), torch.randint(0, 3, (8,))
    return net, (lambda model: (model(x, t, y).float() * w).sum())


BF16 = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)


@pytest.mark.slow
@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_a_compiled_bf16_unet_gets_gradients_as_close_to_fp32_as_eager_bf16():
    """torch 2.13's Inductor gave this network (three levels, attention at the bottom) no gradient at
    all below its last upsampling in bf16 while that was ``F.interpolate`` (compiling.py); through
    ``upsample_nearest2x`` every parameter's gradient is within twice eager bf16's own error of fp32."""
    net, loss = _perturbed_unet_tiny()
    assert compiling.gradient_problem(net, compiling.compile_network(net, torch.device("cpu")), loss, BF16) is None
    assert all(p.grad is None for p in net.parameters())


class _CutGradient(torch.nn.Module):
    """A stand-in for a miscompiled network: the same forward, no gradient below the output layer."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, *args, **kwargs):
        captured = {}
        handle = self.net.out.register_forward_pre_hook(lambda m, a: (captured.update(x=a[0]), (a[0].detach(),))[1])
        try:
            return self.net(*args, **kwargs)
        finally:
            handle.remove()


def test_the_gradient_check_accepts_round_off_and_names_a_cut_gradient():
    net, loss = _perturbed_unet_tiny()
    assert compiling.gradient_problem(net, net, loss, BF16) is None  # eager bf16 against itself: round-off only
    assert compiling.gradient_problem(net, net, loss, contextlib.nullcontext) is None
    problem = compiling.gradient_problem(net, _CutGradient(net), loss, BF16)
    cut = sum(1 for n, _ in net.named_parameters() if not n.startswith("out."))
    assert problem is not None and " of 167 parameters' gradients are off" in problem
    assert int(problem.split()[0]) > 0.9 * cut  # all but the few whose eager bf16 gradient is itself mostly round-off
    assert all(p.grad is None for p in net.parameters())


class _Jitter(torch.nn.Module):
    """A stand-in for a correct compile in fp32: the same network, its input moved by 1e-6 (every
    gradient moves by round-off, also those that are zero in exact arithmetic)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, *args, **kwargs):
        return self.net(x + 1e-6 * torch.sin(torch.arange(x.numel(), dtype=x.dtype)).view_as(x), *args, **kwargs)


def test_the_gradient_check_accepts_fp32_round_off_on_gradients_that_are_zero_in_exact_arithmetic():
    """unet-tiny's convs right before a GroupNorm with one group per channel have a gradient that
    is exactly zero in exact arithmetic; in fp32 it is 1e-9 of noise, which a compiled fp32 network's
    different round-off changes by 100%: a check relative to it alone refused every fp32 compile."""
    net, loss = _perturbed_unet_tiny()
    net.zero_grad(set_to_none=True)
    loss(net).backward()
    grads = {n: float(p.grad.norm()) for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    zero = [n for n, g in grads.items() if g < 1e-5 * max(grads.values())]
    assert len(zero) >= 3 and all(n.endswith(".bias") for n in zero)  # the premise: such gradients exist here
    assert compiling.gradient_problem(net, _Jitter(net), loss, contextlib.nullcontext) is None


def test_a_run_whose_compiled_gradients_are_wrong_trains_eagerly_with_a_warning(tmp_path, monkeypatch):
    """The first step compares the compiled network's gradients with eager mode's on its own batch;
    when they disagree the run says so and trains exactly as an eager run does."""
    monkeypatch.setattr(trainer_module, "compile_network", lambda net, device: _CutGradient(net))
    eager = Trainer(progress=False, **tiny_overrides(tmp_path, run="eager", max_steps=3, ema_select=False)).fit()
    checked = Trainer(progress=False, **tiny_overrides(tmp_path, run="cut", max_steps=3, ema_select=False, compile=True)).fit()
    assert "gradients for this network disagree with eager mode" in (checked.run_dir / "log.txt").read_text()
    assert _losses(eager.run_dir) == _losses(checked.run_dir)
    wa, wb = (load_file(r.run_dir / "checkpoints" / "last.safetensors") for r in (eager, checked))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_whose_compiled_gradients_agree_keeps_the_compiled_network(tmp_path, monkeypatch):
    wrapped = []
    monkeypatch.setattr(trainer_module, "compile_network", lambda net, device: wrapped.append(_Same(net)) or wrapped[-1])
    r = Trainer(progress=False, **tiny_overrides(tmp_path, max_steps=4, ema_select=False, compile=True)).fit()
    log = (r.run_dir / "log.txt").read_text()
    found = re.search(r"gradients agree with eager mode's \(step (\d+)\); training compiled", log)
    assert "disagree" not in log and found
    # a fresh network's gradient reaches only its zero-initialised output layer at step 0, and not yet
    # the layers behind the ResBlocks' zero-initialised convs at step 1: those steps train eagerly;
    # the check (one compiled pass) waits until most parameters have a gradient, then every step is compiled
    checked_at = int(found.group(1))
    assert 1 <= checked_at <= 2 and wrapped[0].calls == 1 + (4 - checked_at)


class _Same(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.net(*args, **kwargs)


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_compile_with_bf16_on_a_cpu_is_accepted():
    config = Config().override(compile=True, precision="bf16", device="cpu")
    assert compiling.choose_compile(config) is config


def test_compile_without_a_toolchain_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    assert "no C++ compiler" in compiling.toolchain_problem(torch.device("cpu"))
    with pytest.raises(ConfigError, match="--compile cannot run here: no C\\+\\+ compiler"):
        compiling.choose_compile(Config().override(compile=True, precision="fp32", device="cpu"))
    config = Config().override(compile=False, precision="bf16", device="cpu")
    assert compiling.choose_compile(config) is config  # nothing to check
    # auto: no compiler means an eager run, not an error
    long_tiny = Config().override(compile="auto", max_minutes=12, network="unet-tiny", device="cpu")
    assert compiling.choose_compile(long_tiny).train.compile is False


@pytest.mark.parametrize("overrides, trial", [
    (dict(), True),
    (dict(max_minutes=None, max_steps=100_000), False),  # a run limited by steps stays eager: reproducible under any load
    (dict(max_minutes=compiling.MIN_MINUTES / 2), False),  # too short to earn a compile back
    (dict(network="unet"), False),  # measured 1.01-1.07x: would lose its compile time
    (dict(text_encoder="builtin"), False),  # not measured
    (dict(task="sr"), False),
])
def test_compile_auto_is_a_trial_only_where_it_was_measured_to_pay(monkeypatch, overrides, trial):
    monkeypatch.setattr(compiling, "toolchain_problem", lambda device: None)
    config = Config().override(**{**dict(compile="auto", max_minutes=compiling.MIN_MINUTES, network="unet-tiny", device="cpu"), **overrides})
    assert compiling.choose_compile(config).train.compile == ("auto" if trial else False)


@pytest.mark.parametrize("compiled_cost, kept", [(0.5, True), (1.0 / 1.04, False)])
def test_compile_auto_times_both_and_keeps_the_faster(tmp_path, monkeypatch, compiled_cost, kept):
    """A ``compile: auto`` run times its eager steps, checks and switches, times its compiled steps
    and keeps the compiled network only when it is GAIN times faster (a fake clock: an eager step
    takes 1 s, a compiled one ``compiled_cost``); a slower compiled network is dropped for eager."""
    monkeypatch.setattr(compiling, "toolchain_problem", lambda device: None)
    wrapped = []
    monkeypatch.setattr(trainer_module, "compile_network", lambda net, device: wrapped.append(_Same(net)) or wrapped[-1])
    now = [0.0]

    def tick(trainer, step, loss):
        now[0] += compiled_cost if trainer.train_net is trainer.compiled_net else 1.0

    steps = 24
    r = Trainer(progress=False, clock=lambda: now[0], callbacks=[tick], **tiny_overrides(
        tmp_path, max_steps=steps, max_minutes=compiling.MIN_MINUTES, network="unet-tiny", channels_last=False,
        ema_select=False, compile="auto")).fit()
    log = (r.run_dir / "log.txt").read_text()
    assert "compile: auto" in (r.run_dir / "config.yaml").read_text()  # settled as a trial
    assert "compile auto: trial" in log  # logged before the run folder existed, written into log.txt too
    # eager steps 2-7 timed, step 8 checks (the compile), 9-10 untimed, 11-16 timed: decided at step 17
    found = re.search(r"compile auto: compiled ([\d.]+) s/step, eager ([\d.]+) s/step \(([\d.]+)x\): training (\w+)", log)
    assert found and float(found.group(1)) == pytest.approx(compiled_cost, abs=1e-3) and float(found.group(2)) == 1.0
    assert found.group(4) == ("compiled" if kept else "eagerly")
    checked = int(re.search(r"gradients agree with eager mode's \(step (\d+)\)", log).group(1))
    assert checked == 2 + compiling.TIMED_STEPS
    decided = checked + 3 + compiling.TIMED_STEPS  # the first step that runs after the decision
    training_calls = (steps - checked) if kept else (decided - checked)
    assert wrapped[0].calls == 1 + training_calls  # the check's compiled pass, then one forward per compiled step


@pytest.mark.skipif(NO_COMPILER, reason="torch.compile on CPU needs a C++ compiler")
def test_the_toolchain_check_compiles_here():
    assert compiling.toolchain_problem(torch.device("cpu")) is None


@pytest.mark.parametrize("argv, value", [([], None), (["--compile"], True), (["--compile", "False"], False), (["--no-compile"], False),
                                         (["--compile", "auto"], "auto")])
def test_the_compile_flag(argv, value):
    from difforge.cli.main import build_parser
    from difforge.cli.train import overrides_from_args

    args = build_parser().parse_args(["train", *argv])
    assert args.compile == value
    assert overrides_from_args(args).get("compile") == value
