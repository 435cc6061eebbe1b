"""files.write_npz_atomic: the .npz `sample` writes, one batch in memory at a time, read back as np.savez_compressed's."""
import re
import zipfile

import numpy as np
import pytest

from diffaug_fast.runs import files


def _batches(images, size):
    for first in range(0, len(images), size):
        yield images[first:first + size]


@pytest.mark.parametrize("size", [1, 3, 7, 10])
def test_parts_read_back_as_one_array(tmp_path, size):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 3, 5, 4), dtype=np.uint8)
    labels, data = rng.integers(0, 10, 10), np.array("fmnist")
    files.write_npz_atomic(tmp_path / "s.npz", images=files.Chunks(images.shape, np.uint8, _batches(images, size)),
                           labels=labels, data=data)
    np.savez_compressed(tmp_path / "ref.npz", images=images, labels=labels, data=data)
    ours, ref = np.load(tmp_path / "s.npz"), np.load(tmp_path / "ref.npz")
    assert sorted(ours.files) == sorted(ref.files)
    for name in ref.files:
        assert ours[name].dtype == ref[name].dtype and np.array_equal(ours[name], ref[name])
    with zipfile.ZipFile(tmp_path / "s.npz") as archive:  # compressed, as savez_compressed's
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in archive.infolist())


def test_non_contiguous_parts(tmp_path):
    images = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 4, 6).transpose(0, 2, 1)  # [2, 6, 4], strided
    files.write_npz_atomic(tmp_path / "s.npz", x=files.Chunks(images.shape, np.float32, iter([images[:1], images[1:]])))
    assert np.array_equal(np.load(tmp_path / "s.npz")["x"], images)


@pytest.mark.parametrize("parts, message", [
    ([np.zeros((2, 3), np.uint8)], "its parts hold 2 rows; expected 4"),
    ([np.zeros((4, 3), np.uint8), np.zeros((1, 3), np.uint8)], "its parts hold 5 rows; expected 4"),
    ([np.zeros((4, 2), np.uint8)], "a part is uint8 (4, 2); expected uint8 [*, 3]"),
    ([np.zeros((4, 3), np.float32)], "a part is float32 (4, 3); expected uint8"),
])
def test_wrong_parts_leave_no_file(tmp_path, parts, message):
    (tmp_path / "s.npz").write_bytes(b"the earlier file")
    with pytest.raises(ValueError, match=re.escape(message)):
        files.write_npz_atomic(tmp_path / "s.npz", images=files.Chunks((4, 3), np.uint8, iter(parts)))
    assert (tmp_path / "s.npz").read_bytes() == b"the earlier file"  # untouched
    assert not (tmp_path / "s.npz.tmp").exists()
