"""The download path, for real, against an HTTP server on 127.0.0.1 that the tests start."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from naive import gzip_bytes, idx_bytes

from fastmnist import load_mnist
from fastmnist.datasets import DataNotFoundError, _files

TEST_FILES = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves /<behaviour>/<name>.gz with one of several good or bad behaviours."""

    def do_GET(self):
        server = self.server
        behaviour, _, filename = self.path.strip("/").partition("/")
        server.requests.append((behaviour, filename))
        name = filename.removesuffix(".gz")
        if behaviour == "missing" or name not in server.files:
            self.send_error(404)
            return
        body = server.files[name]
        if behaviour == "stall":
            server.release.wait(10)  # far past the client's timeout; released at teardown
            return
        if behaviour == "wrongsum":
            body = gzip_bytes(idx_bytes(np.zeros(server.shapes[name], np.uint8)))
        if behaviour == "truncated":
            body = body[: len(body) // 2]  # a complete response of half a gzip file
        self.send_response(200)
        self.send_header("Content-Length", str(len(server.files[name]) if behaviour == "cut"
                                                else len(body)))
        self.end_headers()
        if behaviour == "cut":
            body = body[: len(body) // 2]  # the connection drops mid-body
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(shared_data):
    server = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.daemon_threads = True
    server.requests, server.release = [], threading.Event()
    server.files = {n: (shared_data / "mnist" / f"{n}.gz").read_bytes() for n in TEST_FILES}
    server.shapes = {"t10k-images-idx3-ubyte": (10000, 28, 28),
                     "t10k-labels-idx1-ubyte": (10000,)}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield server, base
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def use_mirrors(monkeypatch, mirror):
    server, base = mirror
    monkeypatch.setattr(_files, "DOWNLOAD_TIMEOUT", 0.5)

    def set_mirrors(*behaviours):
        monkeypatch.setitem(_files.MIRRORS, "mnist", [f"{base}/{b}/" for b in behaviours])
        return server

    return set_mirrors


def test_good_download_is_verified_and_saved(use_mirrors, isolated_homes):
    server = use_mirrors("good")
    home = isolated_homes / "data"
    X, y = load_mnist("test", data_home=home, return_X_y=True)
    assert X.shape == (10000, 784) and y[:5].tolist() == [7, 2, 1, 0, 4]
    saved = sorted(p.name for p in (home / "mnist").iterdir())
    assert saved == [f"{name}.gz" for name in TEST_FILES]  # no temporary files left
    assert (home / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes() == server.files[
        "t10k-images-idx3-ubyte"]
    # The second load reads the saved files: no new request.
    n_requests = len(server.requests)
    load_mnist("test", data_home=home)
    assert len(server.requests) == n_requests


def test_mirrors_are_tried_in_order_until_one_works(use_mirrors, isolated_homes):
    server = use_mirrors("missing", "stall", "cut", "truncated", "wrongsum", "good")
    X, _ = load_mnist("test", data_home=isolated_homes / "data", return_X_y=True)
    assert X.shape == (10000, 784)
    tried = [b for b, f in server.requests if f == "t10k-images-idx3-ubyte.gz"]
    assert tried == ["missing", "stall", "cut", "truncated", "wrongsum", "good"]


@pytest.mark.parametrize("behaviour, reason", [
    ("missing", "HTTP Error 404"),
    ("stall", "timed out"),
    ("cut", "connection closed after"),
    ("truncated", "gzip stream: expected a complete gzip stream"),
    ("wrongsum", "SHA-256 of the decompressed content is"),
])
def test_bad_mirror_fails_cleanly(use_mirrors, isolated_homes, behaviour, reason):
    use_mirrors(behaviour)
    home = isolated_homes / "data"
    with pytest.raises(DataNotFoundError) as info:
        load_mnist("test", data_home=home)
    message = str(info.value)
    assert f"/{behaviour}/t10k-images-idx3-ubyte.gz: " in message
    assert reason in message, message
    assert "Download failed" in message and str(home / "mnist") in message
    # Nothing half-written: neither the final name nor a temporary file.
    assert list((home / "mnist").iterdir()) == []
