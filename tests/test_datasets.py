import pytest
import torch

from ruas_nni.base.errors import UsageError
from ruas_nni.training.datasets import SeededShuffle, UnpairedImages, scan_folders, split_files


def test_crops_are_a_function_of_seed_epoch_and_index(demo_data):
    files = scan_folders([demo_data.train])
    a = UnpairedImages(files, crop=32, seed=3)
    b = UnpairedImages(files, crop=32, seed=3)
    assert a[2].shape == (3, 32, 32) and torch.equal(a[2], b[2])
    a.set_epoch(1)
    assert not torch.equal(a[2], b[2])
    b.set_epoch(1)
    assert torch.equal(a[2], b[2])
    assert 0 <= a[0].min() and a[0].max() <= 1


def test_bad_data_fails_before_work_with_the_folder_named(tmp_path, demo_data):
    with pytest.raises(UsageError, match="no such folder"):
        scan_folders([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty: no image files"):
        scan_folders([tmp_path / "empty"])
    with pytest.raises(UsageError, match="`crop` 5000 is larger than every image"):
        UnpairedImages(scan_folders([demo_data.train]), crop=5000)


def test_split_and_shuffle_are_reproducible(demo_data):
    files = scan_folders([demo_data.train])
    train, val = split_files(files, 0.34, seed=1)
    assert len(train) == 4 and len(val) == 2 and not set(train) & set(val)
    assert (train, val) == split_files(files, 0.34, seed=1)
    s = SeededShuffle(6, seed=2)
    first = list(s)
    s.set_epoch(1)
    assert sorted(first) == list(range(6)) and list(s) != first
    s.set_epoch(0)
    assert list(s) == first
