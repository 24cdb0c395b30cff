from __future__ import annotations

import pytest
from sample_settings import TEST_SAMPLE

from lab2.ops.sample import make_sample_dataset


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    """A generated synthetic sample shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("sample")
    make_sample_dataset(root, progress=False, **TEST_SAMPLE)
    return root
