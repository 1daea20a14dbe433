"""A run with a frozen local CLIP text encoder: captions embedded once, the model file links the
folder (path + sha256), and a pipeline loaded from the file finds it and samples a prompt."""

import pytest
import torch

pytest.importorskip("transformers")

from difforge.modelfile import read_metadata  # noqa: E402
from difforge.models.clip_text import folder_sha256  # noqa: E402
from difforge.pipeline import Pipeline  # noqa: E402
from difforge.train.trainer import Trainer  # noqa: E402
from tests.conftest import tiny_overrides  # noqa: E402
from tests.models.test_clip_text import make_tiny_clip  # noqa: E402


@pytest.mark.slow
def test_clip_text_run_links_the_folder_and_samples(tmp_path):
    (tmp_path / "clip").mkdir()
    clip = make_tiny_clip(tmp_path / "clip")
    result = Trainer(progress=False, **tiny_overrides(tmp_path, text_encoder=str(clip), conditional=False, max_steps=3,
                                                      preview_num=2, preview_steps=2)).fit()
    meta = read_metadata(result.model_file)
    assert meta["text"]["encoder"] == "clip" and meta["text"]["sha256"] == folder_sha256(clip)
    assert meta["network"]["config"]["context_dim"] == 32 and meta["network"]["config"]["text_encoder"] is None
    pipe = Pipeline.from_checkpoint(result.model_file, device="cpu", precision="fp32")
    a = pipe.generate(num=1, prompt="a long scratch", steps=2, seed=0).images
    b = pipe.generate(num=1, prompt=["a long scratch", "a crack"], steps=2, seed=0).images
    assert a.shape == (1, 16, 16, 3) and torch.equal(a[0], b[0])
