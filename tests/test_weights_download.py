"""Weights downloads against a real HTTP server on 127.0.0.1: what a failure says, what is cached."""

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import safetensors.numpy

from keras_preact.weights import WeightsDownloadError, download
from keras_preact.weights.registry import WeightsSource

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
# A real safetensors file, and what a server may send instead with status 200 and no
# Content-Length (so only the content can tell): it cut short, or a login page.
SAFETENSORS = safetensors.numpy.save({"w": np.arange(2000, dtype=np.float32).reshape(40, 50)})
UNANNOUNCED = {
    "whole.bin": SAFETENSORS,
    "cut.bin": SAFETENSORS[:5000],
    "page.bin": b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n",
}


class _Handler(BaseHTTPRequestHandler):
    """/ok: the payload; /short: announces it all, sends 1,000 bytes; `UNANNOUNCED`: their
    bytes without a Content-Length, the connection closed at the end; anything else: 404."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name in UNANNOUNCED:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(UNANNOUNCED[name])
            self.close_connection = True
            return
        if name not in ("ok.bin", "short.bin"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD if name == "ok.bin" else PAYLOAD[:1000])


@pytest.fixture
def server(monkeypatch, tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/w")
    yield
    httpd.shutdown()


def _source(name, file_hash=None):
    return WeightsSource(
        name=f"test:{name}",
        depth=18,
        url="https://example.invalid/unused",
        mirror_path=f"test/{name}.bin",
        format="safetensors",
        layout="timm",
        normalization="tf",
        interpolation="bicubic",
        crop_fraction=0.95,
        accuracy={224: (50.0, None)},
        published="this test",
        license="test",
        size_mb=1,
        file_hash=file_hash,
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing", "(HTTP 404 Not Found)"),
        ("short", "(HTTP 200 OK, but the connection closed after 1000 of the 10240 bytes "),
    ],
)
def test_a_failed_download_names_the_http_status_and_caches_nothing(server, name, expected):
    source = _source(name)
    with pytest.raises(WeightsDownloadError) as caught:
        download.fetch(source)
    message = str(caught.value)
    assert f"{source.name!r} could not be downloaded: http://127.0.0.1:" in message
    assert expected in message and "None" not in message, message
    assert os.listdir(os.path.dirname(download.downloaded_path(source))) == []


def test_a_whole_download_is_checked_against_its_hash_then_cached(server):
    good = _source("ok", file_hash=hashlib.sha256(PAYLOAD).hexdigest())
    path = download.fetch(good)
    with open(path, "rb") as f:
        assert f.read() == PAYLOAD
    wrong = _source("ok", file_hash="0" * 64)
    os.remove(path)
    with pytest.raises(WeightsDownloadError, match=r"failed its hash check: .* \(its sha256 is "):
        download.fetch(wrong)
    assert os.listdir(os.path.dirname(path)) == []


@pytest.mark.parametrize(
    "name, why",
    [
        ("cut", r"it has 5,000 bytes where its header describes 8,\d{3}"),
        ("page", r"it is an HTML or XML page, not a checkpoint"),
    ],
)
def test_a_download_without_a_hash_is_cached_only_whole(server, name, why):
    """No pinned hash (timm's and fb's files): the content must be a whole file of its format."""
    path = download.fetch(_source("whole"))
    with open(path, "rb") as f:
        assert f.read() == SAFETENSORS
    with pytest.raises(
        WeightsDownloadError, match=rf"did not download as a whole safetensors file: .*\({why}"
    ):
        download.fetch(_source(name))
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_content_checks_take_every_whole_format_and_refuse_pages(tmp_path):
    """`_not_whole` on files written in each format: a safetensors header whose length's low
    byte is "<" (0x3C) is whole; a page is refused as any format."""
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    padded = tmp_path / "lt.safetensors"  # header of 316 bytes = 0x013C: starts with "<"
    padded.write_bytes((316).to_bytes(8, "little") + header.ljust(316) + bytes(8))
    assert download._not_whole(str(padded), "safetensors") is None
    assert safetensors.numpy.load_file(str(padded))["w"].shape == (2,)
    torch7 = tmp_path / "net.t7"
    torch7.write_bytes((4).to_bytes(4, "little") + bytes(60))  # TYPE_TORCH, then the object
    assert download._not_whole(str(torch7), "torch7") is None
    page = tmp_path / "page"
    page.write_bytes(b"\xef\xbb\xbf<html><body>Sign in</body></html>")
    for fmt in ("safetensors", "keras_h5", "torch", "torch7", "keras"):
        assert "an HTML or XML page" in download._not_whole(str(page), fmt), fmt
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert download._not_whole(str(empty), "torch7") == "it does not start as a torch7 file does"
