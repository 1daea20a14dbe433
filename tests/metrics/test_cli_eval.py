"""`difforge eval` as a user runs it: subprocess, JSON out, one-line errors."""

import json
import subprocess
import sys

from difforge.cli.main import main
from difforge.metrics.inception import WEIGHTS_ENV, WEIGHTS_FILE

from .conftest import make_folder


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "difforge", "eval", *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def in_process(capsys, *args):
    """The same command without a new interpreter (importing torch costs seconds on a busy machine)."""
    code = main(["eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_two_folders_json_per_class_and_reference(tmp_path, script_extractor, capsys):
    real = make_folder(tmp_path / "real", ["cat", "dog"], 6, seed=0)
    fake = make_folder(tmp_path / "fake", ["cat", "dog"], 5, shift=40, seed=1)
    ref = tmp_path / "ref.npz"
    common = ["--features", script_extractor, "--kid-subsets", "4", "--batch-size", "4"]
    res = cli("--real", real, "--fake", fake, "--json", "--save-ref", ref, *common)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["num_real"] == 12 and out["num_fake"] == 10
    assert out["fid"] > 0 and 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1 and "kid_std" in out
    assert set(out["per_class"]) == {"cat", "dog"} and out["per_class"]["cat"]["num_fake"] == 5
    assert ref.is_file()

    code, stdout, stderr = in_process(capsys, "--real", ref, "--fake", fake, "--json", *common)
    assert code == 0, stderr
    again = json.loads(stdout)
    for k in ("fid", "kid", "precision", "recall"):
        assert abs(again[k] - out[k]) <= 1e-6 * max(1.0, abs(out[k])), k
    assert set(again["per_class"]) == {"cat", "dog"}

    code, stdout, _ = in_process(capsys, "--real", ref, "--fake", fake, "--quiet", "--metrics", "fid,kid", *common)
    assert code == 0 and "FID" in stdout and "dog" in stdout and "±" in stdout and "precision" not in stdout


def test_missing_inception_weights_is_one_clear_line(tmp_path):
    real = make_folder(tmp_path / "real", [""], 3)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TORCH_HOME": str(tmp_path / "torch"), "PYTHONPATH": ":".join(sys.path)}
    env.pop(WEIGHTS_ENV, None)
    res = cli("--real", real, "--fake", real, "--features", "inception", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and WEIGHTS_FILE in lines[0] and "pytorch-fid" in lines[0] and "--inception-weights" in lines[0]


def test_user_errors_in_process(tmp_path, script_extractor, capsys):
    real = make_folder(tmp_path / "real", [""], 3)
    code, _, err = in_process(capsys, "--real", real, "--fake", real, "--features", script_extractor, "--metrics", "fid,sfid")
    assert code == 2 and "sfid" in err and len(err.strip().splitlines()) == 1
    code, _, err = in_process(capsys, "--real", tmp_path / "nope", "--fake", real, "--features", script_extractor)
    assert code == 2 and "nope" in err
    code, _, err = in_process(capsys, "--real", real, "--features", script_extractor)
    assert code == 2 and "--save-ref" in err
    code, _, err = in_process(capsys, "--real", real, "--fake", real, "--features", tmp_path / "real" / "0.png")
    assert code == 2 and "TorchScript" in err


def test_too_few_images_is_a_user_error(tmp_path, script_extractor, capsys):
    real = make_folder(tmp_path / "real", [""], 3)
    code, _, err = in_process(capsys, "--real", real, "--fake", real, "--features", script_extractor, "--metrics", "pr")
    assert code == 2 and "more than 3 samples" in err
    code, _, err = in_process(capsys, "--real", real, "--fake", real, "--features", script_extractor, "--kid-subset-size", "1")
    assert code == 2 and "--kid-subset-size" in err


def test_eval_train_data_reports_memorisation(tmp_path, script_extractor, capsys):
    """`eval --train-data`: a fake folder that is the training folder itself is fully memorised."""
    import json as _json

    make_folder(tmp_path / "train", [""], 12, seed=3)
    code, out, err = in_process(capsys, "--real", tmp_path / "train", "--fake", tmp_path / "train", "--train-data", tmp_path / "train",
                                "--features", script_extractor, "--metrics", "fid", "--json", "--quiet")
    assert code == 0, err
    m = _json.loads(out)["memorisation"]
    assert m["fraction"] == 1.0 and m["features"]["fraction"] == 1.0 and m["features"]["extractor"].startswith("torchscript")
    make_folder(tmp_path / "fresh", [""], 12, seed=4)
    code, out, err = in_process(capsys, "--real", tmp_path / "train", "--fake", tmp_path / "fresh", "--train-data", tmp_path / "train",
                                "--features", script_extractor, "--metrics", "fid", "--json", "--quiet")
    m = _json.loads(out)["memorisation"]
    assert code == 0 and m["fraction"] < 0.5 and m["features"]["fraction"] < 0.5  # 12 noise images: a few fall near by chance
    code, _, err = in_process(capsys, "--real", tmp_path / "train", "--train-data", tmp_path / "train", "--save-ref",
                              tmp_path / "r.npz", "--features", script_extractor, "--quiet")
    assert code == 2 and "give --fake too" in err
