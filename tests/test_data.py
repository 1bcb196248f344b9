"""Tests for fedtl_helpers.inputs.data: the CIFAR-10 loader on small archives written in the exact
official format, and the dataset dispatch."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from fedtl_helpers.inputs import data
from fedtl_helpers.inputs.data import (
    CIFAR10_SHA256,
    CIFAR10_URL,
    DATASETS,
    DatasetError,
    class_names,
    describe,
    load_cifar10,
    load_dataset,
)

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PER_BATCH = 4  # images per batch; the real files have 10,000
# Members are not in name order in the official archive either.
TAR_ORDER = (
    "data_batch_4",
    "readme.html",
    "test_batch",
    "data_batch_3",
    "batches.meta",
    "data_batch_2",
    "data_batch_5",
    "data_batch_1",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's real $FEDTL_DATA_DIR or Keras cache."""
    monkeypatch.delenv("FEDTL_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def make_batches(marker=0):
    """Batch dicts as in the official files; image j of batch b has every pixel = b*16 + j +
    marker, so images are distinguishable and ``marker`` tells datasets apart."""
    out = {}
    for b, name in enumerate(BATCHES):
        values = b * 16 + np.arange(PER_BATCH, dtype=np.uint8) + marker
        out[name] = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": [int((b + j) % 10) for j in range(PER_BATCH)],
            b"data": np.repeat(values[:, None], 3072, axis=1).astype(np.uint8),
            b"filenames": [f"img_{b}_{j}.png".encode() for j in range(PER_BATCH)],
        }
    return out


def dump(batch):
    # Protocol 4 writes bytes as bytes (the official Python 2 files do too).
    return pickle.dumps(batch, protocol=4)


def meta():
    return dump(
        {
            b"label_names": [c.encode() for c in data.CIFAR10_CLASSES],
            b"num_cases_per_batch": PER_BATCH,
            b"num_vis": 3072,
        }
    )


def write_folder(root, batches=None, raw=None):
    """Write ``root/cifar-10-batches-py/``; ``raw`` overrides a file's bytes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {name: dump(b) for name, b in (batches or make_batches()).items()}
    files.update({"batches.meta": meta(), **(raw or {})})
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def write_archive(path, batches=None, raw=None, skip=None):
    """Write a ``cifar-10-python.tar.gz`` laid out like the official one; return its SHA-256."""
    files = {name: dump(b) for name, b in (batches or make_batches()).items()}
    files.update({"batches.meta": meta(), "readme.html": b"<html></html>", **(raw or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name in TAR_ORDER:
            if name == skip:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_pixel(split):
    return int(split[0][0, 0, 0, 0])


def test_archive_and_folder_give_identical_arrays(tmp_path):
    sha = write_archive(tmp_path / "a" / "cifar-10-python.tar.gz")
    write_folder(tmp_path / "f")
    from_tar = load_cifar10(tmp_path / "a", sha256=sha)
    from_dir = load_cifar10(tmp_path / "f")
    (x_train, y_train), (x_test, y_test) = from_tar
    assert x_train.shape == (5 * PER_BATCH, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (PER_BATCH, 32, 32, 3) and x_test.dtype == np.uint8
    assert y_train.shape == (5 * PER_BATCH,) and y_train.dtype == np.int64
    assert y_test.dtype == np.int64
    # Batches are concatenated in order 1..5 regardless of their order in the tar.
    np.testing.assert_array_equal(
        x_train[:, 0, 0, 0], [b * 16 + j for b in range(5) for j in range(PER_BATCH)]
    )
    np.testing.assert_array_equal(y_train[:PER_BATCH], [0, 1, 2, 3])
    np.testing.assert_array_equal(y_test, [5, 6, 7, 8])
    for a, b in zip([*from_tar[0], *from_tar[1]], [*from_dir[0], *from_dir[1]], strict=True):
        np.testing.assert_array_equal(a, b)


def test_rows_are_converted_from_chw_to_hwc(tmp_path):
    batches = make_batches()
    pixels = np.zeros((PER_BATCH, 3072), dtype=np.uint8)
    channel, row, col = 2, 5, 7  # blue, row 5, column 7
    pixels[1, channel * 1024 + row * 32 + col] = 255
    pixels[1, 0 * 1024 + 30 * 32 + 1] = 99  # red at row 30, column 1
    batches["test_batch"][b"data"] = pixels
    write_folder(tmp_path, batches)
    _, (x_test, _) = load_cifar10(tmp_path)
    assert x_test[1, 5, 7, 2] == 255 and x_test[1, 30, 1, 0] == 99
    assert x_test.sum() == 255 + 99
    assert x_test.flags["C_CONTIGUOUS"]


def test_reads_pickles_written_like_the_official_numpy1_files(tmp_path):
    # The official batches name numpy.core.multiarray._reconstruct (numpy 1); numpy 2 pickles
    # name numpy._core. The loader must accept both. Protocol 3 writes globals as plain text
    # lines, as the official protocol-2 files do, so the name can be swapped in place.
    raw = pickle.dumps(make_batches()["data_batch_2"], protocol=3)
    official = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert official != raw
    write_folder(tmp_path, raw={"data_batch_2": official})
    (x_train, _), _ = load_cifar10(tmp_path)
    assert x_train[PER_BATCH, 0, 0, 0] == 16


def test_refuses_pickles_that_would_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    write_folder(tmp_path, raw={"data_batch_1": pickle.dumps({b"data": Evil()})})
    with pytest.raises(DatasetError, match="data_batch_1.*refusing to load global"):
        load_cifar10(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("layout", ["data_dir", "env", "keras_home", "home"])
def test_lookup_order(tmp_path, monkeypatch, layout):
    # Four different datasets (told apart by their first pixel); each place shadows the next.
    write_folder(tmp_path / "mine", make_batches(marker=1))
    write_archive(tmp_path / "env" / "cifar-10-python.tar.gz", make_batches(marker=2))
    write_folder(tmp_path / "keras_home" / "datasets", make_batches(marker=3))
    write_folder(tmp_path / "home" / ".keras" / "datasets", make_batches(marker=4))
    monkeypatch.setenv("FEDTL_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data_dir = tmp_path / "mine" if layout == "data_dir" else None
    if layout in ("keras_home", "home"):
        monkeypatch.delenv("FEDTL_DATA_DIR")
    if layout == "home":
        monkeypatch.delenv("KERAS_HOME")
    expected = {"data_dir": 1, "env": 2, "keras_home": 3, "home": 4}[layout]
    train, _ = load_cifar10(data_dir, sha256=None)
    assert first_pixel(train) == expected


@pytest.mark.parametrize(
    "relative",
    [
        "cifar-10-batches-py-target/cifar-10-batches-py",  # keras.datasets.cifar10, Keras 3
        "cifar-10-batches-py_extracted/cifar-10-batches-py",
        "cifar-10-batches-py-target_archive",  # the archive Keras 3 downloads
        "cifar-10-batches-py.tar.gz",  # tf.keras 2
    ],
)
def test_keras_cache_layouts(tmp_path, relative):
    target = tmp_path / "keras_home" / "datasets" / relative
    if relative.endswith("cifar-10-batches-py"):
        write_folder(target.parent, make_batches(marker=5))
    else:
        write_archive(target, make_batches(marker=5))
    train, _ = load_cifar10(sha256=None)
    assert first_pixel(train) == 5
    assert str(target) in describe("cifar10")


def test_missing_data_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDTL_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path / "mine")
    message = str(err.value)
    for place in (tmp_path / "mine", tmp_path / "env", tmp_path / "keras_home" / "datasets"):
        assert str(place / "cifar-10-python.tar.gz") in message
        assert str(place / "cifar-10-batches-py") in message
    assert str(tmp_path / "keras_home/datasets/cifar-10-batches-py-target") in message
    for needle in (CIFAR10_URL, CIFAR10_SHA256, "download=True", "$FEDTL_DATA_DIR"):
        assert needle in message
    assert not (tmp_path / "mine").exists()  # looking creates nothing
    assert describe("cifar10", data_dir=tmp_path / "mine") == (
        "cifar10 (official CIFAR-10, not found locally)"
    )


def test_checksum_mismatch(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    actual = write_archive(archive)
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        load_cifar10(tmp_path)  # the default: the official hash
    for needle in (str(archive), CIFAR10_SHA256, actual):
        assert needle in str(err.value)


def test_truncated_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_archive(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="damaged or truncated archive") as err:
        load_cifar10(tmp_path, sha256=None)
    assert isinstance(err.value, DatasetError) and str(archive) in str(err.value)
    assert err.value.__cause__ is not None  # chained from the tarfile/gzip error


def test_not_a_gzip_file_is_a_clear_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"this is not a gzip file" * 10)
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz: damaged or truncated"):
        load_cifar10(tmp_path, sha256=None)


def test_archive_missing_a_member(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_archive(archive, skip="data_batch_5")
    with pytest.raises(DatasetError, match="archive lacks cifar-10-batches-py/data_batch_5"):
        load_cifar10(tmp_path, sha256=None)


def test_archive_with_an_empty_member(tmp_path):
    batches = make_batches()
    write_archive(
        tmp_path / "cifar-10-python.tar.gz", batches, raw={"test_batch": b""}
    )  # present but empty: not a pickle
    with pytest.raises(DatasetError, match="cifar-10-batches-py/test_batch: not a readable"):
        load_cifar10(tmp_path, sha256=None)


def wrong(key, value, name="data_batch_3"):
    batches = make_batches()
    batches[name][key] = value
    return {name: dump(batches[name])}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"data_batch_3": dump(make_batches()["data_batch_3"])[:-40]}, "not a readable"),
        ({"data_batch_3": b"\x80\x04garbage"}, "not a readable"),
        ({"data_batch_3": dump([1, 2, 3])}, "expected a dict with keys"),
        ({"data_batch_3": dump({b"data": np.zeros((2, 3072), np.uint8)})}, "expected a dict"),
        (wrong(b"data", np.zeros((PER_BATCH, 3000), np.uint8)), r"\(N, 3072\) uint8.*3000"),
        (wrong(b"data", np.zeros((PER_BATCH, 3072), np.float32)), "float32"),
        (wrong(b"labels", [0, 1]), "must be 4 integers"),
        (wrong(b"labels", [0, 1, 2, 10]), r"0\.\.9, got 0\.\.10"),
        (wrong(b"labels", [0.5, 1, 2, 3]), "dtype float64"),
    ],
)
def test_corrupt_batch_names_the_file(tmp_path, raw, match):
    folder = write_folder(tmp_path / "f", raw=raw)
    with pytest.raises(DatasetError, match=match) as err:
        load_cifar10(tmp_path / "f")
    assert str(folder / "data_batch_3") in str(err.value)
    # The same damage inside an archive names the archive and the member.
    archive = tmp_path / "a" / "cifar-10-python.tar.gz"
    sha = write_archive(archive, raw=raw)
    with pytest.raises(DatasetError, match=match) as err:
        load_cifar10(tmp_path / "a", sha256=sha)
    assert f"{archive}:cifar-10-batches-py/data_batch_3" in str(err.value)


def test_incomplete_folder_names_missing_files(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_5"):
        load_cifar10(tmp_path)


def test_download_lands_atomically_and_loads(tmp_path, capsys):
    source = tmp_path / "server" / "cifar-10-python.tar.gz"
    sha = write_archive(source, make_batches(marker=7))
    dest = tmp_path / "dest"  # does not exist yet
    train, _ = load_cifar10(dest, download=True, url=source.as_uri(), sha256=sha)
    assert first_pixel(train) == 7
    assert sorted(os.listdir(dest)) == ["cifar-10-python.tar.gz"]  # no temporary left over
    assert (dest / "cifar-10-python.tar.gz").read_bytes() == source.read_bytes()
    assert "Downloaded and verified" in capsys.readouterr().out
    # Found locally next time: a bad URL is never touched.
    train, _ = load_cifar10(dest, download=True, url="file:///nonexistent", sha256=sha)
    assert first_pixel(train) == 7


def test_download_goes_to_fedtl_data_dir_without_data_dir(tmp_path, monkeypatch):
    source = tmp_path / "server" / "cifar-10-python.tar.gz"
    sha = write_archive(source)
    monkeypatch.setenv("FEDTL_DATA_DIR", str(tmp_path / "env"))
    load_cifar10(download=True, url=source.as_uri(), sha256=sha)
    assert (tmp_path / "env" / "cifar-10-python.tar.gz").is_file()


def test_download_with_wrong_hash_leaves_nothing_behind(tmp_path):
    source = tmp_path / "server" / "cifar-10-python.tar.gz"
    actual = write_archive(source)
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        load_cifar10(dest, download=True, url=source.as_uri())  # expects the official hash
    assert CIFAR10_SHA256 in str(err.value) and actual in str(err.value)
    assert os.listdir(dest) == []


def test_download_failure_is_an_oserror_naming_the_url(tmp_path):
    url = (tmp_path / "nowhere.tar.gz").as_uri()
    with pytest.raises(OSError, match="could not download.*nowhere.tar.gz"):
        load_cifar10(tmp_path / "dest", download=True, url=url)
    assert os.listdir(tmp_path / "dest") == []


def test_load_dataset_cifar10_takes_the_first_n(tmp_path):
    write_folder(tmp_path)
    (x_train, y_train), (x_test, y_test) = load_dataset(
        "cifar10", data_dir=tmp_path, n_train=5, n_test=2
    )
    assert x_train.shape == (5, 32, 32, 3) and y_train.shape == (5,) and x_test.shape[0] == 2
    np.testing.assert_array_equal(x_train[:, 0, 0, 0], [0, 1, 2, 3, 16])
    with pytest.raises(ValueError, match="n_test=5.*only 4"):
        load_dataset("cifar10", data_dir=tmp_path, n_test=5)
    assert describe("cifar10", data_dir=tmp_path) == (
        f"cifar10 (official extracted folder at {tmp_path / 'cifar-10-batches-py'})"
    )


def test_load_dataset_shapes():
    (x_train, y_train), (x_test, y_test) = load_dataset("shapes", n_train=200, n_test=100)
    assert x_train.shape == (200, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (100, 32, 32, 3) and x_test.dtype == np.uint8
    assert y_train.shape == (200,) and y_train.dtype == np.int64 and y_test.shape == (100,)
    assert 0 <= y_train.min() and y_train.max() < len(class_names("shapes")) == 10
    assert describe("shapes") == "shapes (embedded procedural 10-class 32x32, offline)"


def test_class_names():
    assert class_names("cifar10")[:3] == ("airplane", "automobile", "bird")
    assert len(class_names("cifar10")) == 10


@pytest.mark.parametrize("call", [load_dataset, class_names, describe])
def test_unknown_dataset_name_lists_datasets(call):
    with pytest.raises(ValueError, match="name='mnist'.*shapes, digits, cifar10"):
        call("mnist")
    assert DATASETS == ("shapes", "digits", "cifar10")


@pytest.mark.parametrize(
    "kwargs", [{"n_train": 0}, {"n_test": -1}, {"n_train": 2.5}, {"n_test": True}]
)
def test_bad_sizes_are_rejected_before_loading(kwargs):
    ((param, value),) = kwargs.items()
    with pytest.raises(ValueError, match=f"{param}={value!r}"):
        load_dataset("cifar10", **kwargs)  # no CIFAR-10 here: the size check comes first
