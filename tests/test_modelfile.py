import json
import os

import pytest
import torch
from safetensors.torch import save_file

from difforge import modelfile as mf
from difforge.errors import CheckpointError


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_model_file_round_trip_and_metadata(tmp_path):
    net = _net()
    meta = {"network": {"name": "x", "config": {"a": [1, 2]}}, "data": {"class_names": ["a", "b"]}}
    path = mf.save_model_file(tmp_path / "m.safetensors", net.state_dict(), meta)
    tensors, back = mf.load_model_file(path)
    assert back["network"] == meta["network"] and back["format"] == mf.MODEL_FORMAT
    for k, v in net.state_dict().items():
        assert torch.equal(tensors[k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_pickle_and_missing_files_are_refused_with_messages(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        mf.load_model_file(tmp_path / "nope.safetensors")
    pt = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pt)
    with pytest.raises(CheckpointError, match="pickle"):
        mf.load_model_file(pt)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        mf.load_model_file(junk)
    with pytest.raises(CheckpointError, match="folder"):
        mf.load_model_file(tmp_path)


def test_truncated_model_file_is_detected(tmp_path):
    path = mf.save_model_file(tmp_path / "m.safetensors", _net().state_dict(), {"network": {}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(CheckpointError):
        mf.load_model_file(path)


def test_mismatched_weights_name_the_layers(tmp_path):
    small = torch.nn.Linear(3, 4)
    big = torch.nn.Linear(3, 5)
    with pytest.raises(CheckpointError, match=r"weight \(5, 3\) vs \(4, 3\)"):
        mf.load_weights_into(small, big.state_dict(), "f")


def test_schema_version_old_files_read_newer_refused(tmp_path):
    net = _net()
    old = tmp_path / "old.safetensors"  # written before the schema had a version
    save_file(net.state_dict(), str(old), metadata={"difforge": json.dumps({"format": mf.MODEL_FORMAT, "network": {}})})
    tensors, meta = mf.load_model_file(old)
    assert set(tensors) == set(net.state_dict()) and "version" not in meta
    assert mf.read_metadata(mf.save_model_file(tmp_path / "m.safetensors", net.state_dict(), {}))["version"] == mf.FORMAT_VERSION
    new = tmp_path / "new.safetensors"
    meta = {"format": mf.MODEL_FORMAT, "version": mf.FORMAT_VERSION + 1}
    save_file(net.state_dict(), str(new), metadata={"difforge": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="newer difforge.*upgrade"):
        mf.load_model_file(new)
    other = tmp_path / "other.safetensors"
    save_file(net.state_dict(), str(other), metadata={"difforge": json.dumps({"format": "something-else"})})
    with pytest.raises(CheckpointError, match="not a difforge model file"):
        mf.load_model_file(other)


def test_file_sha256(tmp_path):
    import hashlib

    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(3 << 20))
    assert mf.file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()
