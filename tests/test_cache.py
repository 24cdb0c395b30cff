"""The sample cache: built once, reused, rebuilt on a change, never used half-built."""

from __future__ import annotations

import pytest
import torch

from lab2.ops import cache as cache_module
from lab2.ops import cli
from lab2.ops.audit import audit_dataset
from lab2.ops.cache import build_cache, find_cache
from lab2.ops.loaders import open_dataset
from lab2.ops.sample import make_sample_dataset
from lab2.preprocess import PreprocessParams


@pytest.fixture
def root(tmp_path):
    make_sample_dataset(tmp_path, n_trainval=12, n_test=6, size=64, progress=False)
    return tmp_path


@pytest.fixture
def count_rows(monkeypatch):
    calls = []
    original = cache_module._fill_row

    def counting(job):
        calls.append(job[1])
        return original(job)
    monkeypatch.setattr(cache_module, "_fill_row", counting)
    return calls


def test_cache_is_built_once_and_reused(root, count_rows):
    first = build_cache(root, 32, PreprocessParams(), progress=False, workers=1)
    n = len(count_rows)
    assert n == len(first.names) > 0
    second = build_cache(root, 32, PreprocessParams(), progress=False, workers=1)
    assert len(count_rows) == n and second.folder == first.folder


def test_cache_excludes_skipped_samples(root):
    cache = build_cache(root, 32, None, progress=False, workers=1)
    ds = open_dataset(root, "trainval", 32, progress=False)
    assert not set(cache.names) & audit_dataset(root, progress=False).skipped_names
    assert set(ds.names) <= set(cache.names)


@pytest.mark.parametrize("change", [dict(image_size=48), dict(params=None),
                                    dict(params=PreprocessParams(clahe_clip_limit=3.0))])
def test_changing_a_setting_builds_a_new_cache(root, change):
    base = dict(image_size=32, params=PreprocessParams())
    first = build_cache(root, **base, progress=False, workers=1)
    other = build_cache(root, **{**base, **change}, progress=False, workers=1)
    assert other.folder != first.folder


def test_changing_the_data_set_builds_a_new_cache(root):
    first = build_cache(root, 32, None, progress=False, workers=1)
    extra = first.folder.parent.parent / "oxford-iiit-pet" / "images" / "extra.txt"
    extra.write_text("x", encoding="utf-8")
    assert find_cache(root, 32, None) is None


def test_an_interrupted_build_is_never_used_and_is_rebuilt(root, monkeypatch):
    original = cache_module._fill_row

    def dies_half_way(job):
        if job[0] == 5:
            raise KeyboardInterrupt
        return original(job)
    monkeypatch.setattr(cache_module, "_fill_row", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        build_cache(root, 32, None, progress=False, workers=1)
    assert find_cache(root, 32, None) is None
    assert open_dataset(root, "train", 32, progress=False).cache is None
    monkeypatch.setattr(cache_module, "_fill_row", original)
    cache = build_cache(root, 32, None, progress=False, workers=1)
    assert find_cache(root, 32, None).folder == cache.folder
    assert not list(cache.folder.parent.glob("*.partial"))


@pytest.mark.parametrize("preprocess", [False, True])
def test_dataset_reads_the_same_samples_from_the_cache(root, preprocess):
    direct = open_dataset(root, "val", 32, preprocess=preprocess, progress=False)
    assert direct.cache is None
    build_cache(root, 32, PreprocessParams() if preprocess else None, progress=False, workers=2)
    cached = open_dataset(root, "val", 32, preprocess=preprocess, progress=False)
    assert cached.cache is not None
    for i in range(len(direct)):
        assert torch.equal(direct[i][0], cached[i][0]) and torch.equal(direct[i][1], cached[i][1])


def test_cached_dataset_works_in_data_loader_workers(root):
    build_cache(root, 32, None, progress=False, workers=1)
    ds = open_dataset(root, "train", 32, progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    images, masks, names = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 32, 32) and len(names) == 4


def test_cli_preprocess_builds_the_cache(root, capsys):
    assert cli.main(["preprocess", "--root", str(root), "--image-size", "32",
                     "--workers", "1"]) == 0
    assert find_cache(root, 32, PreprocessParams()) is not None
    assert "preprocessed cache" in capsys.readouterr().out
