"""The seed tools' documented TRAINING command lines run through `difforge train` / `train-classifier`.

Each line is the one in the tool's README (issue 24) with the program name, paths and sizes changed:
image size 16, a few channels, one epoch or two steps, batch 4. Every other flag is verbatim.
"""

import pytest
import yaml
from PIL import Image

from difforge.cli.main import main
from difforge.modelfile import read_metadata

TINY = ["--preview-num", "2", "--preview-steps", "2", "--precision", "fp32", "--quiet"]
IDDM = ["--sample", "ddpm", "--conditional", "True", "--run_name", "df", "--epochs", "1", "--batch_size", "4",
        "--image_size", "16", "--num_classes", "4", "--dataset_path", "{cls}", "--result_path", "{runs}",
        "--network-option", "base_channels=16"]

LINES = {
    # IDDM train.py
    "iddm-conditional": (IDDM, "df"),
    "iddm-unconditional": (["--sample", "ddpm", "--conditional", "False", "--run_name", "df", "--epochs", "1", "--batch_size", "4",
                            "--image_size", "16", "--dataset_path", "{cls}", "--result_path", "{runs}",
                            "--network-option", "base_channels=16"], "df"),
    "iddm-distributed": ([*IDDM, "--distributed", "True", "--main_gpu", "0", "--world_size", "2"], "df"),
    # improved-diffusion image_train.py
    "improved-64-classcond": (["--data_dir", "{flat}", "--image_size", "16", "--num_channels", "16", "--num_res_blocks", "1",
                               "--learn_sigma", "True", "--class_cond", "True", "--diffusion_steps", "4000", "--noise_schedule", "cosine",
                               "--rescale_learned_sigmas", "False", "--rescale_timesteps", "False", "--lr", "3e-4",
                               "--batch_size", "4", "--lr_anneal_steps", "2", "--runs-dir", "{runs}"], "default"),
    "improved-256-lsun": (["--data_dir", "{flat}", "--image_size", "16", "--num_channels", "16", "--num_res_blocks", "1",
                           "--num_heads", "1", "--learn_sigma", "True", "--use_scale_shift_norm", "False", "--attention_resolutions", "8",
                           "--diffusion_steps", "1000", "--noise_schedule", "linear", "--rescale_learned_sigmas", "False",
                           "--rescale_timesteps", "False", "--lr", "1e-4", "--batch_size", "4", "--lr_anneal_steps", "2",
                           "--runs-dir", "{runs}"], "default"),
    "improved-32-cifar": (["--data_dir", "{flat}", "--image_size", "16", "--num_channels", "16", "--num_res_blocks", "1",
                           "--learn_sigma", "True", "--dropout", "0.3", "--diffusion_steps", "4000", "--noise_schedule", "cosine",
                           "--use_kl", "True", "--lr", "1e-4", "--batch_size", "4", "--schedule_sampler", "loss-second-moment",
                           "--lr_anneal_steps", "2", "--runs-dir", "{runs}"], "default"),
    # DiT train.py (the preset's name verbatim, its size scaled by network options)
    "dit": (["--model", "DiT-XL/2", "--data-path", "{cls}", "--image-size", "16", "--batch-size", "4", "--epochs", "1",
             "--num-workers", "4", "--global-seed", "0", "--results-dir", "{runs}",
             "--network-option", "depth=1", "--network-option", "hidden_size=32", "--network-option", "num_heads=2"], "default"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """4 classes x 3 images at 16 px, as class sub-folders (``cls``) and as CLASS_i.png (``flat``)."""
    from difforge.data.builtin import generate_arrays

    root = tmp_path_factory.mktemp("seed_data")
    arrays, labels, names = generate_arrays(size=16, per_class=3, seed=0, channels=3)
    for i, (a, y) in enumerate(zip(arrays, labels)):
        (root / "cls" / names[y]).mkdir(parents=True, exist_ok=True)
        (root / "flat").mkdir(exist_ok=True)
        Image.fromarray(a).save(root / "cls" / names[y] / f"{i}.png")
        Image.fromarray(a).save(root / "flat" / f"{names[y]}_{i}.png")
    return root


def _argv(words, folders, runs):
    return [w.format(cls=folders / "cls", flat=folders / "flat", runs=runs) for w in words]


def _run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("name", list(LINES))
def test_training_line_runs(name, folders, tmp_path, capsys):
    words, run = LINES[name]
    rc, out, err = _run(["train", *_argv(words, folders, tmp_path / "runs"), *TINY], capsys)
    assert rc == 0, err
    ckpt = tmp_path / "runs" / run / "checkpoints"
    for f in ("ema.safetensors", "last.safetensors", "state.safetensors"):
        assert (ckpt / f).is_file(), f
    assert (tmp_path / "runs" / run / "config.yaml").is_file()
    meta = read_metadata(ckpt / "ema.safetensors")
    cfg = yaml.safe_load((tmp_path / "runs" / run / "config.yaml").read_text())
    if name == "iddm-conditional":
        assert meta["data"]["class_names"] == ["crack", "inclusion", "patch", "scratch"]
        assert cfg["train"]["preview_sampler"] == "ddpm"  # IDDM's --sample at training
    if name.startswith("improved"):
        assert cfg["train"]["lr_schedule"] == "linear" and cfg["train"]["max_steps"] == 2  # --lr_anneal_steps
    if name.startswith("improved"):
        assert meta["network"]["name"] == "adm" and "network 'adm'" in err
        assert meta["diffusion"]["learn_sigma"] is True
    if name == "improved-64-classcond":  # --class_cond True on a flat folder: classes from the file names
        assert meta["data"]["class_names"] == ["crack", "inclusion", "patch", "scratch"]
    if name == "improved-256-lsun":
        cfg = meta["network"]["config"]
        assert cfg["num_heads"] == 1 and cfg["use_scale_shift_norm"] is False and list(cfg["attention_resolutions"]) == [8]
    if name == "improved-32-cifar":
        assert meta["data"]["class_names"] == []  # no --class_cond: unconditional
    if name == "iddm-distributed":
        assert "--main_gpu" in err and "launching 2 processes" in err
    if name == "dit":
        assert meta["network"]["name"] == "dit-xl/2" and "--num_workers" in err


def test_classifier_train_line(folders, tmp_path, capsys):
    """guided-diffusion classifier_train.py, labels from the file names as its load_data(class_cond=True)."""
    rc, out, err = _run(["train-classifier", "--data_dir", str(folders / "flat"), "--iterations", "2", "--anneal_lr", "True",
                         "--batch_size", "4", "--lr", "3e-4", "--save_interval", "1", "--weight_decay", "0.05", "--image_size", "16",
                         "--classifier_attention_resolutions", "8", "--classifier_depth", "1", "--classifier_width", "32",
                         "--classifier_pool", "attention", "--classifier_resblock_updown", "True",
                         "--classifier_use_scale_shift_norm", "True", "--runs-dir", str(tmp_path / "runs"), *TINY], capsys)
    assert rc == 0, err
    meta = read_metadata(tmp_path / "runs" / "default" / "checkpoints" / "ema.safetensors")
    assert meta["data"]["class_names"] == ["crack", "inclusion", "patch", "scratch"]
    net = meta["network"]["config"]
    assert net["resblock_updown"] is True and net["use_scale_shift_norm"] is True and net["num_channels"] == 32
    cfg = yaml.safe_load((tmp_path / "runs" / "default" / "config.yaml").read_text())
    assert cfg["train"]["lr_schedule"] == "linear" and cfg["train"]["weight_decay"] == 0.05  # --anneal_lr True


def test_classifier_pool_other_than_attention_refused(folders, tmp_path, capsys):
    rc, _, err = _run(["train-classifier", "--data_dir", str(folders / "flat"), "--classifier_pool", "spatial",
                       "--runs-dir", str(tmp_path / "runs"), *TINY], capsys)
    assert rc == 2 and "--classifier_pool spatial" in err and "attention" in err


def test_then_sample_the_trained_model(folders, tmp_path, capsys):
    """The IDDM training line, then IDDM's generate line on its model file."""
    runs = tmp_path / "runs"
    assert _run(["train", *_argv(IDDM, folders, runs), *TINY], capsys)[0] == 0
    model = runs / "df" / "checkpoints" / "ema.safetensors"
    rc, out, err = _run(["generate", "--conditional", "True", "--generate_name", "df", "--num_images", "2", "--num_classes", "4",
                         "--class_name", "0", "--image_size", "16", "--weight_path", str(model), "--result_path", str(tmp_path),
                         "--steps", "2", "--quiet"], capsys)
    assert rc == 0, err
    assert len(list((tmp_path / "df").glob("**/*.png"))) >= 2


def test_improved_diffusion_train_then_image_sample(folders, tmp_path, capsys):
    """image_train.py's flags, then image_sample.py's with the same model flags: checked equal, accepted."""
    import numpy as np

    words, _ = LINES["improved-64-classcond"]
    assert _run(["train", *_argv(words, folders, tmp_path / "runs"), *TINY], capsys)[0] == 0
    model = tmp_path / "runs" / "default" / "checkpoints" / "ema.safetensors"
    rc, out, err = _run(["sample", "--model_path", str(model), "--image_size", "16", "--num_channels", "16", "--num_res_blocks", "1",
                         "--learn_sigma", "True", "--class_cond", "True", "--diffusion_steps", "4000", "--noise_schedule", "cosine",
                         "--timestep_respacing", "3", "--num_samples", "2", "--batch_size", "2", "--out", str(tmp_path / "s"),
                         "--quiet"], capsys)
    assert rc == 0, err
    assert np.load(tmp_path / "s" / "samples_2x16x16x3.npz")["arr_0"].shape == (2, 16, 16, 3)


def test_class_cond_on_flat_folder_labels_from_names(folders, tmp_path, capsys):
    from difforge.config import DataConfig
    from difforge.data.source import load_training_images

    data = load_training_images(DataConfig(data=str(folders / "flat"), image_size=16, labels_from_filenames=True), progress=False)
    assert data.class_names == ["crack", "inclusion", "patch", "scratch"]
    names = sorted(p.name for p in (folders / "flat").iterdir())
    assert [data.class_names[y] for y in data.labels.tolist()] == [n.split("_")[0] for n in names]
    # without the flag a flat folder is unconditional
    assert load_training_images(DataConfig(data=str(folders / "flat"), image_size=16), progress=False).class_names == []


def test_num_classes_contradicting_the_data_refused(folders, tmp_path, capsys):
    words = [w if w != "4" else "10" for w in _argv(IDDM, folders, tmp_path / "runs")]  # --num_classes 10 (batch_size 10 too)
    rc, _, err = _run(["train", *words, *TINY], capsys)
    assert rc == 2 and "--num_classes 10" in err and "4 classes" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_true_load_model_dir(folders, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert _run(["train", *_argv(IDDM, folders, runs), *TINY], capsys)[0] == 0
    before = read_metadata(runs / "df" / "checkpoints" / "last.safetensors")["train"]
    words = _argv(IDDM, folders, runs)
    words[words.index("--epochs") + 1] = "2"
    rc, out, err = _run(["train", "--resume", "True", "--start_epoch", "10", "--load_model_dir", "df", *words, *TINY], capsys)
    assert rc == 0, err
    after = read_metadata(runs / "df" / "checkpoints" / "last.safetensors")["train"]
    assert after["step"] == 2 * before["step"] and round(after["epoch"]) == 2
    assert f"--start_epoch 10: {runs / 'df'} was saved at epoch 1" in err
    assert sorted(p.name for p in runs.iterdir()) == ["df"]


def test_parser_error_names_the_sub_command_and_a_near_miss(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochz", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("usage: difforge train") and "did you mean --epochs?" in err
