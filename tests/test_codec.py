import shutil

import pytest

from difforge.errors import CheckpointError
from difforge.pipeline import Pipeline
from difforge.train.trainer import Trainer
from tests.train.test_latent_data import latent_overrides, vae_file  # noqa: F401 (vae_file is a fixture)


def test_moved_or_changed_vae(tmp_path, vae_file):
    vae_copy = tmp_path / "vae.safetensors"
    shutil.copy(vae_file, vae_copy)
    result = Trainer(progress=False, **latent_overrides(tmp_path, vae_copy, max_steps=1)).fit()
    moved = tmp_path / "elsewhere.safetensors"
    vae_copy.rename(moved)
    with pytest.raises(CheckpointError, match=f"VAE {vae_copy} is not there any more.*--vae FILE"):
        Pipeline.from_checkpoint(result.model_file, device="cpu")
    pipe = Pipeline.from_checkpoint(result.model_file, device="cpu", vae=moved)
    assert pipe.generate(num=1, steps=2).images.shape == (1, 16, 16, 3)
    other = vae_file.parent / "last.safetensors"  # another VAE (the raw weights): another hash
    shutil.copy(other, vae_copy)
    with pytest.raises(CheckpointError, match="is not the VAE .* trained with"):
        Pipeline.from_checkpoint(result.model_file, device="cpu")
    with pytest.raises(CheckpointError, match="not a VAE"):
        Pipeline.from_checkpoint(result.model_file, device="cpu", vae=result.model_file)
