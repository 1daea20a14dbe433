"""The model card: Hugging Face front matter that parses, and a body that describes the model."""

import yaml

from difforge.cli.main import main
from difforge.export.card import model_card
from tests.export.runkit import tiny_model_file


def front_matter(text):
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_card_of_a_bare_model_file(tmp_path, capsys):
    model, _ = tiny_model_file(tmp_path / "m.safetensors", "dit", num_classes=3)
    assert main(["card", str(model)]) == 0
    text = (tmp_path / "README.md").read_text()
    head, body = front_matter(text)
    assert head["library_name"] == "difforge"
    assert head["pipeline_tag"] == "unconditional-image-generation"
    assert {"difforge", "diffusion", "class-conditional", "dit"} <= set(head["tags"])
    assert "license" not in head and "# license:" in text  # left for the owner, as a hint
    for section in ("## Network", "## Data", "## Classes", "## Training recipe", "## Metrics", "## How to sample"):
        assert section in body
    assert "`scratch`" in body and "`patch`" in body
    assert "difforge sample m.safetensors" in body and 'Pipeline.from_checkpoint("m.safetensors")' in body
    assert "README.md" in capsys.readouterr().out


def test_card_of_a_run_uses_its_config_metrics_and_log(tiny_run):
    model = tiny_run / "checkpoints" / "ema.safetensors"
    head, body = front_matter(model_card(model))
    assert "unconditional" in head["pipeline_tag"]
    assert "built-in procedural industrial-surface defect set" in body
    assert "24 images from built-in defect dataset" in body  # from log.txt
    assert "adamw, lr 0.002" in body and "Trained for 12 steps" in body
    assert "Final training loss" in body


def test_unconditional_card(tmp_path):
    model, _ = tiny_model_file(tmp_path / "u.safetensors", "unet", num_classes=0)
    head, body = front_matter(model_card(model))
    assert "unconditional" in head["tags"] and "None: the model is unconditional." in body
    assert "--class" not in body


def test_card_names_the_defect_weighted_loss_and_every_augmentation():
    from difforge.export.card import _augmentation, _recipe

    meta = {"diffusion": {"noise_schedule": "cosine", "diffusion_steps": 1000, "target": "v", "loss": "mse"}}
    assert any("pixels inside a defect mask weigh 11x (`--mask-weight 10`)" in ln for ln in _recipe(meta, {"data": {"mask_weight": 10.0}}))
    for off in ({"mask_weight": 0.0}, {"mask_weight": "auto"}, {}):
        assert not any("defect mask" in ln for ln in _recipe(meta, {"data": off}))
    assert _augmentation({"hflip": False}) == "none"
    assert _augmentation({"hflip": True}) == "random horizontal flips"
    both = _augmentation({"hflip": False, "augment": "flips,rot90", "augment_p": 0.3, "crop_p": 0.5})
    assert "flips,rot90 with p = 0.3" in both and "crop batches with p = 0.5" in both
