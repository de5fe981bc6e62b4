"""Tests for beyond_imagenet.download against an in-process HTTP server on 127.0.0.1 (no internet).

Each test targets one protection (resume, quarantine, HTML detection, path checks, atomic
extraction) and is written so that it fails if that protection is removed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
import socket
import struct
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from beyond_imagenet import download as dl
from beyond_imagenet.download import COMPLETE_MARKER, DownloadError, download, safe_extract, sha256_file

PAYLOAD = random.Random(0).randbytes(600_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
DROP_AT = 200_000
FAST = dict(progress=False, timeout=5, backoff=0)  # no sleeping between retries in tests


# --------------------------------------------------------------------------------------------
# Local HTTP server
# --------------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    drop_after: int | None = None  # first request only: send this many body bytes, then drop
    always_drop: bool = False  # drop on every request
    reset: bool = False  # drop with a TCP RST instead of a clean close
    ignore_range: bool = False  # answer 200 with the whole body even to Range requests
    no_length: bool = False  # send no Content-Length (HTTP/1.0: the body ends when the connection closes)
    hold: threading.Event | None = None  # send half the body, then wait for this before the rest
    served: int = 0


@dataclass
class ServerState:
    base: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def seen(self, path: str) -> list[str | None]:
        """Range headers of the requests made for `path`, in order."""
        with self.lock:
            return [rng for p, rng in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a server thread forever

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            route = state.routes.get(self.path)
            nth = route.served if route else 0
            if route:
                route.served += 1
        if route is None:
            self.send_error(404)
            return
        body, start, status = route.body, 0, 200
        if rng and not route.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        if not route.no_length:
            self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if route.always_drop or (route.drop_after is not None and nth == 0):
            self.wfile.write(payload[: route.drop_after or 0])
            self.wfile.flush()
            if route.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            self.close_connection = True
            return
        if route.hold is not None:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            route.hold.wait(timeout=10)
            payload = payload[len(payload) // 2 :]
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def _httpd() -> Iterator[ServerState]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(_httpd: ServerState) -> ServerState:
    with _httpd.lock:
        _httpd.routes.clear()
        _httpd.requests.clear()
    return _httpd


def leftovers(dest: Path) -> set[str]:
    return {p.name for p in dest.parent.iterdir()}


# --------------------------------------------------------------------------------------------
# download()
# --------------------------------------------------------------------------------------------


def test_plain_download_verifies_and_leaves_no_part(server: ServerState, tmp_path: Path) -> None:
    server.routes["/ok.tar"] = Route(PAYLOAD)
    dest = tmp_path / "sub" / "ok.tar"
    out = download(server.url("/ok.tar"), dest, sha256=PAYLOAD_SHA.upper(), size=len(PAYLOAD), **FAST)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == {"ok.tar"}
    assert sha256_file(dest) == PAYLOAD_SHA


@pytest.mark.parametrize("reset", [False, True], ids=["clean-close", "tcp-reset"])
def test_dropped_connection_resumes_with_range(
    server: ServerState, tmp_path: Path, caplog: pytest.LogCaptureFixture, reset: bool
) -> None:
    server.routes["/drop.bin"] = Route(PAYLOAD, drop_after=DROP_AT, reset=reset)
    dest = tmp_path / "drop.bin"
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        download(server.url("/drop.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == {"drop.bin"}
    ranges = server.seen("/drop.bin")
    assert len(ranges) == 2 and ranges[0] is None
    if not reset:  # after a RST the client may have lost some buffered bytes, so K is not exact
        assert ranges[1] == f"bytes={DROP_AT}-"
    assert any("interrupted" in r.getMessage() for r in caplog.records)


def test_server_ignoring_range_restarts_from_zero(server: ServerState, tmp_path: Path) -> None:
    server.routes["/norange.bin"] = Route(PAYLOAD, drop_after=DROP_AT, ignore_range=True)
    dest = tmp_path / "norange.bin"
    download(server.url("/norange.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    # Appending the full 200 answer to the partial file would corrupt it; sha256 would then fail.
    assert dest.read_bytes() == PAYLOAD
    assert server.seen("/norange.bin") == [None, f"bytes={DROP_AT}-"]


def test_resumes_part_left_by_killed_job(server: ServerState, tmp_path: Path) -> None:
    server.routes["/big.bin"] = Route(PAYLOAD)
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(PAYLOAD[:12345])
    download(server.url("/big.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.seen("/big.bin") == ["bytes=12345-"]
    assert leftovers(dest) == {"big.bin"}


def test_complete_part_is_finished_via_416(server: ServerState, tmp_path: Path) -> None:
    """A job killed between the last byte and the rename must not download again."""
    server.routes["/done.bin"] = Route(PAYLOAD)
    dest = tmp_path / "done.bin"
    (tmp_path / "done.bin.part").write_bytes(PAYLOAD)
    download(server.url("/done.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.seen("/done.bin") == [f"bytes={len(PAYLOAD)}-"]


def test_gives_up_after_retries_without_progress(
    server: ServerState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.routes["/dead.bin"] = Route(PAYLOAD, always_drop=True)  # headers, then nothing
    dest = tmp_path / "dead.bin"
    with caplog.at_level(logging.WARNING, logger=dl.__name__), pytest.raises(DownloadError) as err:
        download(server.url("/dead.bin"), dest, retries=2, **FAST)
    assert server.url("/dead.bin") in str(err.value)
    assert len(server.seen("/dead.bin")) == 3  # first try + 2 retries
    assert sum("interrupted" in r.getMessage() for r in caplog.records) == 2
    assert not dest.exists() and not (tmp_path / "dead.bin.part").exists()


def test_http_404_is_not_retried(server: ServerState, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404") as err:
        download(server.url("/missing.bin"), tmp_path / "m.bin", **FAST)
    assert server.url("/missing.bin") in str(err.value)
    assert len(server.seen("/missing.bin")) == 1
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_is_quarantined(server: ServerState, tmp_path: Path) -> None:
    server.routes["/bad.bin"] = Route(PAYLOAD[:-1] + b"X")  # right size, wrong bytes
    dest = tmp_path / "bad.bin"
    with pytest.raises(DownloadError, match="quarantine") as err:
        download(server.url("/bad.bin"), dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), **FAST)
    msg = str(err.value)
    assert server.url("/bad.bin") in msg and PAYLOAD_SHA in msg and "bad.bin.quarantine" in msg
    assert not dest.exists()
    assert not (tmp_path / "bad.bin.part").exists()
    assert (tmp_path / "bad.bin.quarantine").read_bytes() == PAYLOAD[:-1] + b"X"


def test_size_reported_by_server_differs(server: ServerState, tmp_path: Path) -> None:
    server.routes["/short.bin"] = Route(PAYLOAD[:1000])
    dest = tmp_path / "short.bin"
    with pytest.raises(DownloadError, match=r"reports 1000 bytes but 600000") as err:
        download(server.url("/short.bin"), dest, size=len(PAYLOAD), **FAST)
    assert server.url("/short.bin") in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "route",
    [
        # Body does not start like HTML: only the Content-Type gives it away.
        Route(b"Quota exceeded. <a href='/login'>Sign in</a>", content_type="text/html; charset=utf-8"),
        Route(b"\n  <!DOCTYPE html><html>Sign in to continue</html>"),  # mislabelled as a binary
        Route(b"<!-- served by a proxy --><head><title>Error</title></head><body>quota</body>"),
        Route(b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml">denied</html>'),
    ],
    ids=["content-type", "sniffed", "comment-first", "xhtml"],
)
def test_html_page_instead_of_archive(server: ServerState, tmp_path: Path, route: Route) -> None:
    server.routes["/drive.zip"] = route
    dest = tmp_path / "drive.zip"
    with pytest.raises(DownloadError, match="web page") as err:
        download(server.url("/drive.zip"), dest, **FAST)
    assert server.url("/drive.zip") in str(err.value) and str(dest) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_verified_dest_needs_no_network(server: ServerState, tmp_path: Path) -> None:
    dest = tmp_path / "have.bin"
    dest.write_bytes(PAYLOAD)
    out = download(server.url("/have.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert out == dest and server.seen("/have.bin") == []
    # ...but a corrupt existing file is not trusted.
    dest.write_bytes(b"corrupt")
    with pytest.raises(DownloadError, match="quarantine"):
        download(server.url("/have.bin"), dest, sha256=PAYLOAD_SHA, **FAST)
    assert not dest.exists() and server.seen("/have.bin") == []


def test_record_checksum_at_first_download(server: ServerState, tmp_path: Path) -> None:
    server.routes["/nosum.tar"] = Route(PAYLOAD)
    dest, record = tmp_path / "nosum.tar", tmp_path / "checksums" / "nosum.sha256"
    download(server.url("/nosum.tar"), dest, record_checksum=record, **FAST)
    assert record.read_text().split()[0] == PAYLOAD_SHA

    # Same file again: verifies against the record without touching the network.
    download(server.url("/nosum.tar"), dest, record_checksum=record, **FAST)
    assert len(server.seen("/nosum.tar")) == 1

    # The host now serves something else: the record catches it.
    dest.unlink()
    server.routes["/nosum.tar"] = Route(PAYLOAD[::-1])
    with pytest.raises(DownloadError, match="quarantine") as err:
        download(server.url("/nosum.tar"), dest, record_checksum=record, **FAST)
    assert "recorded at first download" in str(err.value)
    assert not dest.exists() and (tmp_path / "nosum.tar.quarantine").exists()
    assert record.read_text().split()[0] == PAYLOAD_SHA


def test_file_url_local_mirror(tmp_path: Path) -> None:
    src = tmp_path / "mirror" / "data.tar"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "data.tar"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data.tar.part").write_bytes(PAYLOAD[:777])  # resumes locally too
    download(src.as_uri(), dest, sha256=PAYLOAD_SHA, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest) == {"data.tar"}


# --------------------------------------------------------------------------------------------
# safe_extract()
# --------------------------------------------------------------------------------------------


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tinfo(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = type_, linkname, 0o644
    return info


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_tar_gz_and_zip_detected_by_content(tmp_path: Path) -> None:
    tgz = make_tar(
        tmp_path / "a.bin",  # misleading name: the kind must come from the content
        [(tinfo("pkg/x.txt"), b"x"), (tinfo("pkg/sub/y.txt"), b"y"), (tinfo("pkg/link", tarfile.SYMTYPE, "x.txt"), None)],
    )
    out = safe_extract(tgz, tmp_path / "t")
    assert (out / "pkg" / "x.txt").read_bytes() == b"x"
    assert (out / "pkg" / "sub" / "y.txt").read_bytes() == b"y"
    assert (out / "pkg" / "link").is_symlink() and (out / "pkg" / "link").read_bytes() == b"x"
    assert (out / COMPLETE_MARKER).is_file()

    zp = make_zip(tmp_path / "b.dat", {"d/z.txt": b"z", "top.txt": b"t"})
    out = safe_extract(zp, tmp_path / "z")
    assert (out / "d" / "z.txt").read_bytes() == b"z" and (out / "top.txt").read_bytes() == b"t"
    assert (out / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.dat", "t", "z"]


def test_strip_components(tmp_path: Path) -> None:
    tgz = make_tar(
        tmp_path / "s.tgz",
        [(tinfo("pkg-1.0", tarfile.DIRTYPE), None), (tinfo("pkg-1.0/a.txt"), b"a"),
         (tinfo("pkg-1.0/h", tarfile.LNKTYPE, "pkg-1.0/a.txt"), None)],
    )  # fmt: skip
    out = safe_extract(tgz, tmp_path / "t", strip_components=1)
    assert sorted(p.name for p in out.iterdir()) == sorted([COMPLETE_MARKER, "a.txt", "h"])
    assert (out / "h").read_bytes() == b"a"
    zp = make_zip(tmp_path / "s.zip", {"root/in/z.txt": b"z"})
    assert (safe_extract(zp, tmp_path / "z", strip_components=2) / "z.txt").read_bytes() == b"z"


def _malicious(tmp: Path, kind: str) -> tuple[Path, str]:
    """Build a malicious archive of `kind`; return it and the member the error must name."""
    arch = tmp / "archives"
    arch.mkdir()
    if kind == "tar-dotdot":
        return make_tar(arch / "a.tgz", [(tinfo("ok.txt"), b"ok"), (tinfo("../evil"), b"pwned")]), "../evil"
    if kind == "tar-absolute":
        name = str(tmp / "work" / "abs_evil")
        return make_tar(arch / "a.tgz", [(tinfo("ok.txt"), b"ok"), (tinfo(name), b"pwned")]), name
    if kind == "tar-symlink-abs":
        members = [(tinfo("passwd", tarfile.SYMTYPE, "/etc/passwd"), None)]
        return make_tar(arch / "a.tgz", members), "passwd"
    if kind == "tar-symlink-rel":
        members = [(tinfo("d/up", tarfile.SYMTYPE, "../.."), None), (tinfo("d/up/evil"), b"pwned")]
        return make_tar(arch / "a.tgz", members), "d/up"
    if kind == "tar-symlink-chain":  # each target looks harmless on its own: l2 -> l1/.. == outside
        members = [(tinfo("l1", tarfile.SYMTYPE, "."), None), (tinfo("l2", tarfile.SYMTYPE, "l1/.."), None),
                   (tinfo("l2/evil"), b"pwned")]  # fmt: skip
        return make_tar(arch / "a.tgz", members), "l2"
    if kind == "tar-hardlink":
        members = [(tinfo("ok.txt"), b"ok"), (tinfo("hl", tarfile.LNKTYPE, "../secret"), None)]
        return make_tar(arch / "a.tgz", members), "hl"
    if kind == "tar-device":
        dev = tinfo("null", tarfile.CHRTYPE)
        dev.devmajor, dev.devminor = 1, 3
        return make_tar(arch / "a.tar", [(dev, None)], mode="w"), "null"
    if kind == "zip-dotdot":
        return make_zip(arch / "a.zip", {"ok.txt": b"ok", "../evil": b"pwned"}), "../evil"
    if kind == "zip-backslash":
        return make_zip(arch / "a.zip", {"..\\evil": b"pwned"}), "..\\evil"
    raise AssertionError(kind)


MALICIOUS = ["tar-dotdot", "tar-absolute", "tar-symlink-abs", "tar-symlink-rel", "tar-symlink-chain",
             "tar-hardlink", "tar-device", "zip-dotdot", "zip-backslash"]  # fmt: skip


@pytest.mark.parametrize("data_filter", [True, False], ids=["with-data-filter", "without-data-filter"])
@pytest.mark.parametrize("kind", MALICIOUS)
def test_malicious_archives_are_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, data_filter: bool
) -> None:
    # Without tarfile's data filter (Python < 3.11.4) only our own checks stand in the way.
    monkeypatch.setattr(dl, "_HAS_DATA_FILTER", data_filter and dl._HAS_DATA_FILTER)
    archive, member = _malicious(tmp_path, kind)
    work = tmp_path / "work"
    work.mkdir()
    (work / "secret").write_text("secret")
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, work / "out")
    assert str(archive) in str(err.value)
    assert repr(member) in str(err.value)  # the offending member is named
    # Nothing inside, nothing outside, no temporary directory.
    assert sorted(p.name for p in work.iterdir()) == ["secret"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives", "work"]
    assert (work / "secret").read_text() == "secret"


def test_stale_tmp_dir_from_killed_extraction_is_replaced(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "a.tgz", [(tinfo("new.txt"), b"new")])
    stale = tmp_path / "t.tmp-123"
    (stale / "half").mkdir(parents=True)
    (stale / "half" / "written.txt").write_text("junk")
    out = safe_extract(tgz, tmp_path / "t")
    assert sorted(p.name for p in out.iterdir()) == sorted([COMPLETE_MARKER, "new.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz", "t"]


def test_interrupted_extraction_leaves_no_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tgz = make_tar(tmp_path / "a.tgz", [(tinfo("one.txt"), b"1"), (tinfo("two.txt"), b"2")])
    real_extractall = tarfile.TarFile.extractall

    def killed_midway(self: tarfile.TarFile, path: str, members: list[tarfile.TarInfo], **kw: object) -> None:
        real_extractall(self, path, members=members[:1], **kw)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        safe_extract(tgz, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz"]
    monkeypatch.undo()
    out = safe_extract(tgz, tmp_path / "t")
    assert (out / "two.txt").read_bytes() == b"2"


def test_existing_target_complete_or_not(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "a.tgz", [(tinfo("f.txt"), b"f")])
    (tmp_path / "half").mkdir()
    with pytest.raises(DownloadError, match="not a complete extraction"):
        safe_extract(tgz, tmp_path / "half")
    out = safe_extract(tgz, tmp_path / "t")
    tgz.unlink()  # a complete target is returned without reading the archive again
    assert safe_extract(tgz, tmp_path / "t") == out


@pytest.mark.parametrize("content", [b"", b"<!DOCTYPE html><html>quota</html>", b"not an archive at all"])
def test_not_an_archive(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "a.tar.gz"
    bad.write_bytes(content)
    with pytest.raises(DownloadError, match="a.tar.gz"):
        safe_extract(bad, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


def test_truncated_archive(tmp_path: Path) -> None:
    tgz = make_tar(tmp_path / "a.tgz", [(tinfo("big.bin"), PAYLOAD)])
    tgz.write_bytes(tgz.read_bytes()[: len(tgz.read_bytes()) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        safe_extract(tgz, tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz"]


def test_an_archive_holding_an_html_file_is_not_taken_for_a_web_page(server: ServerState, tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        page = b"<html><head></head><body>the dataset's own index page</body></html>"
        info = tarfile.TarInfo("index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    server.routes["/site.tar"] = Route(buf.getvalue())
    dest = download(server.url("/site.tar"), tmp_path / "site.tar", **FAST)
    assert dest.read_bytes() == buf.getvalue()


def test_mirrors_are_tried_in_order_after_a_failure(server: ServerState, tmp_path: Path) -> None:
    """A recipe's mirrors serve the same file (same checksum): the first source answers with a web
    page, the second with a corrupt copy (quarantined), the third with the file."""
    from beyond_imagenet.datasets.fetch import fetch_file

    server.routes["/quota.zip"] = Route(b"<html><body>Quota exceeded</body></html>", content_type="text/html")
    server.routes["/corrupt.zip"] = Route(PAYLOAD[:-1] + b"x")
    server.routes["/good.zip"] = Route(PAYLOAD)
    recipe = {"url": server.url("/quota.zip"), "mirrors": [server.url("/corrupt.zip"), server.url("/good.zip")],
              "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}
    dest = fetch_file(recipe, tmp_path / "set.zip", **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [len(server.seen(p)) > 0 for p in ("/quota.zip", "/corrupt.zip", "/good.zip")] == [True] * 3
    # All sources failing: one error naming each of them.
    recipe["mirrors"] = [server.url("/corrupt.zip")]
    with pytest.raises(DownloadError) as err:
        fetch_file(recipe, tmp_path / "other.zip", **FAST)
    assert "every source of other.zip failed" in str(err.value)
    assert server.url("/quota.zip") in str(err.value) and server.url("/corrupt.zip") in str(err.value)
    assert not (tmp_path / "other.zip").exists()


# --------------------------------------------------------------------------------------------
# No length, no published checksum (issue 15)
# --------------------------------------------------------------------------------------------


def _tarball(tmp_path: Path, mode: str = "w:gz") -> bytes:
    return make_tar(tmp_path / "src.tar", [(tinfo("pkg/big.bin"), PAYLOAD), (tinfo("pkg/x.txt"), b"x")], mode).read_bytes()


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_a_lengthless_download_cut_early_is_resumed_not_recorded(server: ServerState, tmp_path: Path, mode) -> None:
    """Guards: a server that sends no length and cuts off early looked like a finished download,
    and the sha256 of the cut file was recorded. The archive's own structure (gzip end marker and
    CRC; tar member sizes) shows it is incomplete, so the download resumes and the good file's
    checksum is the one recorded."""
    body = _tarball(tmp_path, mode)
    server.routes["/pug.tar"] = Route(body, no_length=True, drop_after=len(body) // 3)
    dest, record = tmp_path / "dl" / "pug.tar", tmp_path / "dl" / "pug.tar.sha256"
    download(server.url("/pug.tar"), dest, record_checksum=record, **FAST)
    assert dest.read_bytes() == body
    assert record.read_text().split()[0] == hashlib.sha256(body).hexdigest()
    assert server.seen("/pug.tar") == [None, f"bytes={len(body) // 3}-"]


def test_a_lengthless_download_that_stays_cut_is_refused(server: ServerState, tmp_path: Path) -> None:
    """A server that always sends the same cut body (no length, no Range support): not trusted,
    no checksum recorded, the bytes quarantined, one message saying so."""
    body = _tarball(tmp_path)
    server.routes["/cut.tar.gz"] = Route(body, no_length=True, always_drop=True, drop_after=len(body) // 2,
                                         ignore_range=True)
    dest, record = tmp_path / "dl" / "cut.tar.gz", tmp_path / "dl" / "cut.tar.gz.sha256"
    with pytest.raises(DownloadError, match=r"sent no length, and the \d+ bytes received are not a complete file") as err:
        download(server.url("/cut.tar.gz"), dest, record_checksum=record, retries=1, **FAST)
    assert "no checksum was recorded" in str(err.value)
    assert not dest.exists() and not record.exists() and (tmp_path / "dl" / "cut.tar.gz.quarantine").exists()


def test_a_lengthless_complete_download_is_accepted(server: ServerState, tmp_path: Path) -> None:
    body = _tarball(tmp_path)
    server.routes["/ok.tgz"] = Route(body, no_length=True)
    dest = tmp_path / "ok.tgz"
    download(server.url("/ok.tgz"), dest, record_checksum=tmp_path / "ok.sha256", **FAST)
    assert dest.read_bytes() == body and len(server.seen("/ok.tgz")) == 1


@pytest.mark.parametrize("cut, problem", [
    (lambda b: b[: len(b) // 2], True), (lambda b: b[:-4], True), (lambda b: b, False)])
def test_integrity_problem_of_a_cut_gzip_zip_and_json(tmp_path: Path, cut, problem) -> None:
    """Cut anywhere (even in the gzip trailer), each format's own check sees it."""
    files = {"a.tgz": _tarball(tmp_path), "a.zip": make_zip(tmp_path / "z.zip", {"x": PAYLOAD}).read_bytes(),
             "a.json": b'{"0": [1, 2, 3], "1": [4, 5, 6]}'}
    for name, data in files.items():
        (tmp_path / name).write_bytes(cut(data))
        assert (dl.integrity_problem(tmp_path / name) is not None) == problem, name


def test_a_recorded_checksum_is_dropped_when_the_file_fails_to_unpack(server: ServerState, tmp_path: Path) -> None:
    """Guards: after a bad (cut) copy had its sha256 recorded and failed to unpack, every later good
    download was quarantined against the bad record. The record goes with the file, and the rerun
    downloads and unpacks the good one."""
    from beyond_imagenet.datasets import resolve_dataset
    from beyond_imagenet.datasets.fetch import fetch_file, unpack_dataset

    body = _tarball(tmp_path)
    server.routes["/cue.tar.gz"] = Route(body)
    downloads = tmp_path / "downloads"
    archive, record = downloads / "cue.tar.gz", downloads / "cue.tar.gz.sha256"
    downloads.mkdir()
    archive.write_bytes(body[: len(body) // 2])  # a bad copy whose sha256 was recorded at first download
    record.write_text(f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  cue.tar.gz\n")
    spec = resolve_dataset("cue", {"kind": "cue_conflict", "source": "download", "url": server.url("/cue.tar.gz")},
                           str(tmp_path / "res"))
    out = tmp_path / "res" / "datasets" / "cue"
    with pytest.raises(DownloadError) as err:
        unpack_dataset(spec, [archive], out)
    assert "truncated or corrupt" in str(err.value) and f"that record ({record}) was dropped" in str(err.value)
    assert not record.exists() and not archive.exists() and not out.exists()
    fetch_file({"url": server.url("/cue.tar.gz")}, archive, **FAST)  # the rerun: a good copy is accepted
    assert record.read_text().split()[0] == hashlib.sha256(body).hexdigest()
    unpack_dataset(spec, [archive], out)
    assert (out / "pkg" / "big.bin").read_bytes() == PAYLOAD


def test_fetch_dataset_keeps_a_complete_folder_and_redoes_one_of_another_recipe(tmp_path: Path) -> None:
    """The workflow's fetch_dataset job (one per downloaded dataset: download, unpack, manifest):
    the folder is no Snakemake output, so a rerun (or another study) keeps a complete one instead of
    downloading and unpacking again, unless the study now names another file (url, sha256)."""
    from beyond_imagenet.datasets import resolve_dataset
    from beyond_imagenet.datasets.fetch import fetch_dataset, recipe_record

    first, second = tmp_path / "first.tar.gz", tmp_path / "second.tar.gz"
    first.write_bytes(_tarball(tmp_path))
    make_tar(second, [(tinfo("pkg/other.txt"), b"other")], "w:gz")

    def spec(archive):
        entry = {"kind": "cue_conflict", "source": "download", "url": archive.as_uri(), "sha256": sha256_file(archive)}
        return resolve_dataset("cue", entry, str(tmp_path / "res"))

    kept = spec(first)
    out = fetch_dataset(kept)
    assert (out / "pkg" / "big.bin").read_bytes() == PAYLOAD and (out / COMPLETE_MARKER).is_file()
    assert recipe_record(kept).is_file() and not (out / recipe_record(kept).name).exists()
    first.unlink()  # neither the source nor the download is needed again: the complete folder is kept
    (tmp_path / "res" / "downloads" / "cue" / "first.tar.gz").unlink()
    assert fetch_dataset(kept) == out and (out / "pkg" / "big.bin").read_bytes() == PAYLOAD
    out = fetch_dataset(spec(second))  # another recipe: fetched and unpacked again
    assert (out / "pkg" / "other.txt").read_bytes() == b"other" and not (out / "pkg" / "big.bin").exists()


# --------------------------------------------------------------------------------------------
# Two downloads of one file at once (issue 24)
# --------------------------------------------------------------------------------------------


def _wait_for(condition, what: str, timeout: float = 10.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("published", [True, False], ids=["published-sha", "recorded-sha"])
def test_two_downloads_of_one_file_at_once(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    published: bool,
) -> None:
    """Guards: a second download of the same file (a download job outliving a killed Snakemake, or
    two working directories sharing one resources folder) appended to the same .part; both reported
    a verified file and the second renamed an empty one into place. The second now waits for the
    first and finds the file complete: one transfer, the right bytes, nothing left beside it."""
    monkeypatch.setattr(dl, "_LOCK_POLL_S", 0.01)
    hold = threading.Event()
    # Larger than two read chunks (1 MiB), so the first half reaches the .part before the hold.
    payload = random.Random(1).randbytes(3 * dl.CHUNK_SIZE)
    server.routes["/shared.bin"] = Route(payload, hold=hold)
    dest = tmp_path / "shared.bin"
    record = tmp_path / "shared.bin.sha256"
    options = {"sha256": hashlib.sha256(payload).hexdigest()} if published else {"record_checksum": record}
    results: list[object] = []

    def one() -> None:
        try:
            results.append(download(server.url("/shared.bin"), dest, **options, **FAST))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    caplog.set_level(logging.INFO, logger="beyond_imagenet.download")
    first = threading.Thread(target=one)
    first.start()
    part = tmp_path / "shared.bin.part"
    _wait_for(lambda: part.exists() and part.stat().st_size > 0, "the first download to write")
    second = threading.Thread(target=one)
    second.start()
    # It waits for the lock (or, without one, sends its own request, or ends).
    _wait_for(lambda: "is being downloaded by another process" in caplog.text
              or len(server.seen("/shared.bin")) > 1 or not second.is_alive(), "the second download")
    hold.set()  # the first one finishes while the second waits
    first.join(10)
    second.join(10)
    assert results == [dest, dest]
    assert dest.read_bytes() == payload
    assert len(server.seen("/shared.bin")) == 1
    assert leftovers(dest) == ({"shared.bin"} if published else {"shared.bin", "shared.bin.sha256"})
    if not published:
        assert record.read_text().split()[0] == hashlib.sha256(payload).hexdigest()


def test_a_part_file_written_by_another_process_is_not_renamed_into_place(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards: the checksum was that of the bytes streamed, not of the file renamed into place, so a
    .part changed behind the download's back (a writer that ignores the lock) was "verified"."""
    server.routes["/f.bin"] = Route(PAYLOAD)
    fetch = dl._fetch_once

    def fetch_then_foreign_write(url, dest, part, *args, **kwargs):
        done = fetch(url, dest, part, *args, **kwargs)
        with open(part, "ab") as f:
            f.write(b"written by someone else")
        return done

    monkeypatch.setattr(dl, "_fetch_once", fetch_then_foreign_write)
    dest = tmp_path / "f.bin"
    record = tmp_path / "f.bin.sha256"
    with pytest.raises(DownloadError, match=r"f\.bin\.part changed while .* was downloaded into it.*Another "
                                            r"process wrote to it\. It was moved to .*f\.bin\.quarantine"):
        download(server.url("/f.bin"), dest, record_checksum=record, **FAST)
    assert not dest.exists() and not record.exists()
    assert leftovers(dest) == {"f.bin.quarantine"}
    # The remedy: delete the quarantined file and rerun.
    (tmp_path / "f.bin.quarantine").unlink()
    monkeypatch.setattr(dl, "_fetch_once", fetch)
    assert download(server.url("/f.bin"), dest, record_checksum=record, **FAST).read_bytes() == PAYLOAD


def test_a_lock_left_by_a_killed_downloader_does_not_block(server: ServerState, tmp_path: Path) -> None:
    """A lock file left behind (its holder killed: the kernel dropped the flock) is taken over."""
    server.routes["/k.bin"] = Route(PAYLOAD)
    dest = tmp_path / "k.bin"
    (tmp_path / "k.bin.lock").write_text("12345\n")
    (tmp_path / "k.bin.part").write_bytes(PAYLOAD[:1000])
    assert download(server.url("/k.bin"), dest, sha256=PAYLOAD_SHA, **FAST).read_bytes() == PAYLOAD
    assert server.seen("/k.bin") == ["bytes=1000-"]
    assert leftovers(dest) == {"k.bin"}


def test_the_printed_remedy_for_a_stuck_downloader_works(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A download waiting for another process names its pid and says to end it if it is stuck;
    ending it (the kernel drops its lock) lets the waiting download take over and finish."""
    import os
    import signal
    import subprocess
    import sys

    monkeypatch.setattr(dl, "_LOCK_POLL_S", 0.01)
    server.routes["/stuck.bin"] = Route(PAYLOAD)
    dest = tmp_path / "stuck.bin"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from beyond_imagenet.io import LockFile; "
         "lock = LockFile(sys.argv[1]); assert lock.acquire(); print('held', flush=True); time.sleep(60)",
         str(tmp_path / "stuck.bin.lock")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        caplog.set_level(logging.INFO, logger="beyond_imagenet.download")
        results: list[object] = []
        waiter = threading.Thread(target=lambda: results.append(
            download(server.url("/stuck.bin"), dest, sha256=PAYLOAD_SHA, **FAST)))
        waiter.start()
        _wait_for(lambda: "is being downloaded by another process" in caplog.text, "the download to wait")
        assert f"(pid {holder.pid}," in caplog.text and f"end it (kill {holder.pid})" in caplog.text
        assert not server.seen("/stuck.bin") and waiter.is_alive()
        os.kill(holder.pid, signal.SIGTERM)  # the remedy the message prints
        waiter.join(10)
        assert results == [dest] and dest.read_bytes() == PAYLOAD
        assert leftovers(dest) == {"stuck.bin"}
    finally:
        holder.kill()
        holder.wait()
