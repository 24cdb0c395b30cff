from __future__ import annotations

import pytest

from lab2.data import make_sample_dataset

#: Small settings for the generated sample in tests (the default sample is larger).
TEST_SAMPLE = dict(seed=0, n_trainval=40, n_test=20, size=96)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    """A generated synthetic sample shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("sample")
    make_sample_dataset(root, progress=False, **TEST_SAMPLE)
    return root
