import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import spec_for, write_dataset

from lenet.data import datasets, idx, sources
from lenet.data.download import download_dataset
from lenet.errors import DataError


def test_loads_verified_arrays(tmp_path):
    arrays = write_dataset(tmp_path / "d")
    data = sources.load_from(spec_for(arrays), tmp_path / "d")
    assert data.train.images.shape == (200, 28, 28) and data.test.labels.shape == (100,)
    np.testing.assert_array_equal(data.train.labels, arrays["train-labels-idx1-ubyte"])


def test_raw_files_have_the_same_digest_as_gzipped_ones(tmp_path):
    arrays = write_dataset(tmp_path / "raw", compress=False)
    data = sources.load_from(spec_for(arrays), tmp_path / "raw")
    assert len(data.train) == 200


def test_checksum_mismatch_names_the_file(tmp_path):
    arrays = write_dataset(tmp_path / "d")
    spec = spec_for(arrays)
    tampered = arrays["t10k-images-idx3-ubyte"].copy()
    tampered[0, 0, 0] ^= 1
    idx.write(tmp_path / "d" / "t10k-images-idx3-ubyte.gz", tampered)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: checksum mismatch"):
        sources.load_from(spec, tmp_path / "d")


def test_images_and_labels_must_agree(tmp_path):
    arrays = write_dataset(tmp_path / "d")
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:150]
    idx.write(tmp_path / "d" / "train-labels-idx1-ubyte.gz", arrays["train-labels-idx1-ubyte"])
    with pytest.raises(DataError, match=r"200 images but .* 150 labels"):
        sources.load_from(spec_for(arrays), tmp_path / "d")


def test_labels_out_of_range(tmp_path):
    arrays = write_dataset(tmp_path / "d")
    arrays["t10k-labels-idx1-ubyte"][3] = 12
    idx.write(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(DataError, match="label 12 out of range"):
        sources.load_from(spec_for(arrays), tmp_path / "d")


def test_wrong_rank(tmp_path):
    arrays = write_dataset(tmp_path / "d")
    arrays["train-images-idx3-ubyte"] = arrays["train-images-idx3-ubyte"].reshape(200, -1)
    idx.write(tmp_path / "d" / "train-images-idx3-ubyte.gz", arrays["train-images-idx3-ubyte"])
    with pytest.raises(DataError, match=r"expected uint8 images \(N, H, W\)"):
        sources.load_from(spec_for(arrays), tmp_path / "d")


def test_source_order(isolated_sources, monkeypatch):
    root = isolated_sources
    arrays = write_dataset(root / "x")
    spec = spec_for(arrays)
    places = {
        "data_dir": root / "given",
        "env": root / "env",
        "cache": root / "cache" / "lenet" / "synthetic",
        "debian": root / "debian" / "synthetic",
    }
    for directory in places.values():
        write_dataset(directory)
    monkeypatch.setenv("LENET_DATA_DIR", str(places["env"]))
    assert sources.locate(spec, places["data_dir"], download=False) == places["data_dir"]
    assert sources.locate(spec, None, download=False) == places["env"]
    monkeypatch.delenv("LENET_DATA_DIR")
    assert sources.locate(spec, None, download=False) == places["cache"]
    for f in places["cache"].iterdir():
        f.unlink()
    assert sources.locate(spec, None, download=False) == places["debian"]


def test_data_dir_may_hold_a_dataset_folder(isolated_sources):
    arrays = write_dataset(isolated_sources / "root" / "synthetic")
    assert sources.locate(spec_for(arrays), isolated_sources / "root", download=False) == (
        isolated_sources / "root" / "synthetic")


def test_nothing_found_says_where_it_looked(isolated_sources):
    arrays = write_dataset(isolated_sources / "elsewhere")
    partial = isolated_sources / "partial"
    write_dataset(partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        sources.locate(spec_for(arrays), partial, download=False)
    message = str(info.value)
    assert "was not found" in message and "only 3 of 4 files" in message
    assert "user cache" in message and "Debian package" in message and "--data-dir" in message


class Server:
    """A local HTTP server over a directory, counting requests."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *args: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_from_local_server(isolated_sources, monkeypatch):
    served = isolated_sources / "served"
    arrays = write_dataset(served)
    with Server(served) as server:
        spec = spec_for(arrays, mirrors=(server.url,))
        monkeypatch.setitem(datasets.DATASETS, "synthetic", spec)
        data = sources.load("synthetic", download=True)
    cache = isolated_sources / "cache" / "lenet" / "synthetic"
    assert data.source == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f.gz_name for f in spec.all_files())
    np.testing.assert_array_equal(data.test.images, arrays["t10k-images-idx3-ubyte"])


def test_download_falls_back_to_the_next_mirror(isolated_sources):
    served = isolated_sources / "served"
    arrays = write_dataset(served)
    with Server(served) as good, Server(isolated_sources) as missing:
        spec = spec_for(arrays, mirrors=(missing.url + "nothing-here/", good.url))
        directory = download_dataset(spec, isolated_sources / "dl", spec.mirrors, progress=False)
    assert len(list(directory.iterdir())) == 4


def test_download_with_bad_checksum_leaves_nothing(isolated_sources):
    served = isolated_sources / "served"
    arrays = write_dataset(served)
    spec = spec_for(arrays)
    # Serve a tampered file under the right name.
    tampered = arrays["train-labels-idx1-ubyte"].copy()
    tampered[0] = (tampered[0] + 1) % 10
    idx.write(served / "train-labels-idx1-ubyte.gz", tampered)
    with Server(served) as server, pytest.raises(DataError, match=r"labels.*checksum mismatch"):
        download_dataset(spec, isolated_sources / "dl", [server.url], progress=False)
    left = sorted(p.name for p in (isolated_sources / "dl").iterdir())
    assert "train-labels-idx1-ubyte.gz" not in left
    assert not [name for name in left if name.startswith(".")]  # no temporary file left


def test_failed_download_is_part_of_the_not_found_message(isolated_sources, monkeypatch):
    arrays = write_dataset(isolated_sources / "x")
    with Server(isolated_sources / "x") as server:
        url = server.url + "missing/"
    monkeypatch.setenv("LENET_DATA_MIRROR", url)  # the server is gone: connection refused
    spec = spec_for(arrays, mirrors=())
    with pytest.raises(DataError, match="download: could not download"):
        sources.locate(spec, None, download=True)


def test_real_specs_are_consistent():
    for spec in datasets.DATASETS.values():
        assert len(spec.classes) == 10 and len(spec.all_files()) == 4
        for f in spec.all_files():
            assert len(f.raw_md5) == 32 and len(f.gz_md5) == 32
    assert datasets.FASHION_MNIST.classes[0] == "t-shirt/top"
    assert datasets.FASHION_MNIST.classes[-1] == "ankle boot"
