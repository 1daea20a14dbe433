import pytest

from tests.export.runkit import train_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One real 12-step training run (previews at 4, 8, 12), shared read-only."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"))
