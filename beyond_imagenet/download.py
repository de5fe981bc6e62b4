"""Robust download and safe unpacking of large research datasets (1-60 GB files).

Standard library only (urllib, hashlib, tarfile, zipfile) plus tqdm for progress, so it works on
clusters where no download manager can be installed. Why each piece exists:

* Downloads go to ``dest + ".part"`` and resume with HTTP ``Range`` after a dropped connection or a
  killed job, because restarting a 60 GB transfer from zero is not an option.
* The file only appears at ``dest`` (atomic ``os.replace``) once its size and sha256 (published, or
  recorded at first download) check out -- those of the file renamed into place, read back from
  disk; a bad file is moved to ``dest + ".quarantine"`` so that neither Snakemake nor the next run
  mistakes it for a good one.
* One process downloads a file at a time (``dest + ".lock"``, an flock): a second download of it (a
  job outliving a killed Snakemake, two working directories sharing one resources folder) waits
  and then finds it complete, instead of appending to the same ``.part``.
* Hosts such as Google Drive answer quota / login problems with an HTML page and status 200; that
  page is detected and reported instead of being saved as the "archive".
* Archives are unpacked into a temporary sibling directory and renamed into place when complete,
  after every member has been checked to stay inside the target (path traversal, absolute paths,
  escaping symlinks / hard links, device files) -- for zip as well as tar, and on Pythons without
  tarfile's ``filter="data"``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.client
import logging
import os
import pathlib
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tqdm import tqdm

from beyond_imagenet import faults
from beyond_imagenet.io import CHUNK_SIZE, LockFile, atomic_folder, atomic_write_text, file_chunks, sha256_file, tmp_name

__all__ = ["COMPLETE_MARKER", "DownloadError", "download", "safe_extract", "sha256_file"]

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
USER_AGENT = "beyond-imagenet-downloader/0.1 (Python urllib)"
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")
_HTML_CONTENT_TYPES = ("text/html", "application/xhtml+xml")
_MAX_BACKOFF_S = 60.0
_MAX_SYMLINK_HOPS = 40
# Module-level so tests can simulate Pythons (< 3.11.4) without tarfile's extraction filters.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


class DownloadError(RuntimeError):
    """A download or extraction failed in a way the user has to act on; the message says how."""


class _TransientError(Exception):
    """A network failure worth retrying, resuming from the bytes already on disk."""


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def _normalise_sha256(value: str) -> str:
    """Accept ``ABC..``/``sha256:abc..`` spellings from configs, reject anything not a sha256."""
    v = value.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", v):
        raise ValueError(f"not a sha256 hex digest: {value!r}")
    return v


def _read_record(record: pathlib.Path) -> str:
    text = record.read_text(encoding="utf-8").split()
    try:
        return _normalise_sha256(text[0] if text else "")
    except ValueError:
        raise DownloadError(
            f"checksum record {record} is malformed (expected a sha256 hex digest); "
            "delete it to record a new checksum at the next download"
        ) from None


def _write_record(record: pathlib.Path, digest: str, name: str) -> None:
    """Write ``sha256sum``-style, atomically, so a kill never leaves a truncated record."""
    atomic_write_text(record, f"{digest}  {name}\n", encoding="utf-8")
    log.info("recorded sha256 %s of %s in %s (checksum recorded at first download)", digest, name, record)


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def _sibling(path: pathlib.Path, suffix: str) -> pathlib.Path:
    return path.with_name(path.name + suffix)


def _looks_like_html(head: bytes) -> bool:
    """A web page served in place of a file: it starts with markup (a comment, <?xml, <head> ...)
    and has an HTML tag in its first KB. No archive starts with '<' (tar starts with a member
    name, gzip/zip with magic bytes), so an archive holding an HTML file is not mistaken for one."""
    start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(b"<") and any(marker in start for marker in _HTML_MARKERS)


def _html_error(url: str, dest: pathlib.Path, part: pathlib.Path, kept_partial: bool) -> DownloadError:
    host = urllib.parse.urlsplit(url).netloc
    msg = (
        f"{url} returned a web page (HTML) instead of the file. The host probably refused the "
        "download: a quota was exceeded, a login or licence acceptance is required, or the file "
        f"has moved. Use a mirror, or download the file manually (e.g. in a browser) and save it as "
        f"{dest}, then re-run."
    )
    if "google" in host:
        msg += " For large Google Drive files the link usually needs '&confirm=t' as well."
    if kept_partial:
        msg += f" The partial download at {part} was kept so that a later run can resume it."
    return DownloadError(msg)


@dataclass
class _Response:
    """What we need from an HTTP or file:// response, in one shape."""

    stream: BinaryIO | None
    status: int  # 200 (whole file), 206 (from `start`), 416 (range not satisfiable)
    content_type: str = ""
    length: int | None = None  # bytes in this body
    total: int | None = None  # size of the whole file, where known
    start: int = 0

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _open_file_url(url: str, offset: int) -> _Response:
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"cannot open {url}: file:// URLs must point at this machine (file:///path)")
    path = pathlib.Path(urllib.request.url2pathname(parsed.path))
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller via _Response.close
    except FileNotFoundError:
        raise DownloadError(f"local mirror file {path} (from {url}) does not exist; check the mirror path") from None
    except OSError as exc:
        raise _TransientError(f"cannot read {path}: {exc}") from exc
    total = os.fstat(f.fileno()).st_size
    if offset > total:
        offset = 0
    f.seek(offset)
    return _Response(f, 206 if offset else 200, "", total - offset, total, offset)


def _open(url: str, offset: int, timeout: float) -> _Response:
    """Request `url` from byte `offset`; classify failures as transient or fatal."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        return _open_file_url(url, offset)
    if scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL {url!r}: use http://, https:// or file://")
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            if exc.code == 416:
                m = _CONTENT_RANGE.fullmatch((exc.headers.get("Content-Range") or "").strip())
                total = int(m.group(3)) if m and m.group(3) != "*" else None
                return _Response(None, 416, total=total)
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise _TransientError(f"HTTP {exc.code} {exc.reason}") from exc
            hint = (
                "the host requires a login or permission; download the file manually"
                if exc.code in (401, 403)
                else "check that the URL is still valid (datasets move) or use a mirror"
            )
            raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}; {hint}.") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _TransientError(f"cannot connect: {getattr(exc, 'reason', exc)}") from exc

    content_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    clen = resp.headers.get("Content-Length")
    length = int(clen) if clen and clen.isdigit() else None
    if resp.status == 206:
        m = _CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
        start = int(m.group(1)) if m and m.group(1) else -1
        total = int(m.group(3)) if m and m.group(3) != "*" else None
        return _Response(resp, 206, content_type, length, total, start)
    if resp.status != 200:
        resp.close()
        raise DownloadError(f"{url} answered HTTP {resp.status}, expected 200 or 206; check the URL or use a mirror.")
    return _Response(resp, 200, content_type, length, length, 0)


@dataclass
class _State:
    """Bytes in the .part file and their running sha256, kept in lock-step across retries."""

    hasher: Any = field(default_factory=hashlib.sha256)
    nbytes: int = 0
    length_known: bool = True  # the last response said how long the file is

    def update(self, chunk: bytes) -> None:
        self.hasher.update(chunk)
        self.nbytes += len(chunk)

    def restart(self, part: pathlib.Path) -> None:
        """Throw the partial download away (the server cannot resume it)."""
        part.unlink(missing_ok=True)
        self.hasher, self.nbytes = hashlib.sha256(), 0


def _state_of(part: pathlib.Path) -> _State:
    """Hash an existing .part once, so resuming does not need a second full read at the end."""
    state = _State()
    if part.exists():
        for chunk in file_chunks(part):
            state.update(chunk)
    return state


def _read(resp: _Response) -> bytes:
    assert resp.stream is not None
    try:
        return resp.stream.read(CHUNK_SIZE)
    except (http.client.HTTPException, OSError) as exc:
        raise _TransientError(f"connection lost: {exc!r}") from exc


def _fetch_once(
    url: str, dest: pathlib.Path, part: pathlib.Path, state: _State, size: int | None, timeout: float, bar: tqdm
) -> bool:
    """One request from ``state.nbytes`` on. True when the .part is complete, False to re-request."""
    offset = state.nbytes
    resp = _open(url, offset, timeout)
    with contextlib.closing(resp):
        if resp.status == 416:
            if offset and resp.total == offset:
                return True  # the .part already holds the whole file (killed before the rename)
            log.warning("%s rejected resuming at byte %d; restarting from zero", url, offset)
            state.restart(part)
            return False
        if resp.status == 206 and resp.start != offset:
            log.warning("%s answered a resume request from the wrong offset; restarting from zero", url)
            state.restart(part)
            return False
        if resp.status == 200 and offset:
            log.warning("%s does not support resuming (answered 200 to a Range request); restarting from zero", url)
            state.restart(part)
            offset = 0
        if resp.content_type in _HTML_CONTENT_TYPES:
            raise _html_error(url, dest, part, kept_partial=offset > 0)
        chunk = _read(resp)
        if offset == 0 and _looks_like_html(chunk):
            raise _html_error(url, dest, part, kept_partial=False)
        total = resp.total if resp.total is not None else (offset + resp.length if resp.length is not None else None)
        state.length_known = total is not None
        if size is not None and total is not None and total != size:
            raise DownloadError(
                f"{url} reports {total} bytes but {size} were expected; the host may serve a different "
                f"version of the file. Check the URL / mirror (nothing was saved to {dest})."
            )
        bar.reset(total=total)
        bar.update(offset)
        if chunk:  # no empty .part for a connection that died before the first byte
            with open(part, "ab") as f:
                while chunk:
                    f.write(chunk)
                    state.update(chunk)
                    bar.update(len(chunk))
                    chunk = _read(resp)
        received = state.nbytes - offset
        if resp.length is not None and received < resp.length:
            raise _TransientError(f"connection closed after {received} of {resp.length} bytes")
        if total is not None and state.nbytes < total:
            raise _TransientError(f"connection closed at byte {state.nbytes} of {total}")
        return True


class _NotComplete(_TransientError):
    """A download whose length nobody stated ended where its own format says it is not complete."""


def integrity_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the file at ``path`` is not complete by its own structure, or None if it is (or its
    format carries no such check). What a download has to go by when the server sent no length and
    no checksum is published: a connection cut early looks like a normal end of the body.

    gzip / bz2 / xz (a compressed tar too): the whole stream is decompressed, which checks its end
    marker and, for gzip and xz, the CRC and length of the data; zip: every member's CRC; tar: every
    header and that the last member's data is all there; JSON: that it parses."""
    import bz2
    import gzip
    import json
    import lzma

    path = pathlib.Path(path)
    size = path.stat().st_size
    if size == 0:
        return "it is empty"
    with open(path, "rb") as f:
        head = f.read(6)
    streams = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ": lzma.open}
    try:
        for magic, opener in streams.items():
            if head.startswith(magic):
                with opener(path, "rb") as stream:
                    while stream.read(CHUNK_SIZE):
                        pass
                return None
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            return f"zip member {bad!r} is damaged" if bad else None
        if tarfile.is_tarfile(path):
            end = 0
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    end = max(end, member.offset_data + (member.size if member.isreg() else 0))
            return f"its last member needs {end} bytes, the file has {size}" if end > size else None
        if head[:1] in (b"{", b"["):
            with open(path, encoding="utf-8") as f:
                json.load(f)
            return None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, lzma.LZMAError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _drop_empty(part: pathlib.Path) -> None:
    """An empty .part holds nothing to resume; do not leave it behind."""
    with contextlib.suppress(OSError):
        if part.stat().st_size == 0:
            part.unlink()


def _quarantine(path: pathlib.Path, quarantine: pathlib.Path) -> None:
    os.replace(path, quarantine)
    log.error("moved %s to %s", path, quarantine)


def _verify(
    path: pathlib.Path,
    url: str,
    *,
    size: int | None,
    expected_sha: str | None,
    sha_source: str,
    digest: str | None,
    quarantine: pathlib.Path,
) -> str | None:
    """Check size then sha256; on mismatch quarantine `path` and raise. Returns the digest if known."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        _quarantine(path, quarantine)
        raise DownloadError(
            f"size mismatch for {url}: expected {size} bytes, got {actual_size}. The file was moved to "
            f"quarantine at {quarantine}; delete it and retry, or check the mirror."
        )
    if expected_sha is None:
        return digest
    if digest is None:
        log.info("verifying sha256 of %s", path)
        digest = sha256_file(path)
    if digest != expected_sha:
        _quarantine(path, quarantine)
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {expected_sha} ({sha_source}), got {digest}. "
            f"The file was moved to quarantine at {quarantine}; delete it and retry, or check the mirror "
            "(it may serve a corrupted copy or a different version of the file)."
        )
    return digest


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    record_checksum: str | os.PathLike[str] | None = None,
    retries: int = 5,
    timeout: float = 60,
    progress: bool = True,
    backoff: float = 1.0,
) -> pathlib.Path:
    """Download `url` to `dest`, resuming and verifying; return `dest`.

    `retries` bounds consecutive attempts that add no bytes: an attempt that made progress resets
    the count, so a long transfer over a flaky link is not abandoned after a few drops. Waits
    between attempts grow from `backoff` seconds (doubling, capped at a minute). If `sha256` is None
    and `record_checksum` names a file, the first download writes its sha256 there and later
    downloads must match it. A `dest` that already exists and verifies is returned without network
    access (a plain existence check if no size/checksum is known).
    """
    dest = pathlib.Path(dest)
    part = _sibling(dest, ".part")
    quarantine = _sibling(dest, ".quarantine")
    expected_sha = _normalise_sha256(sha256) if sha256 else None
    sha_source = "published checksum"
    record = pathlib.Path(record_checksum) if record_checksum is not None and expected_sha is None else None
    if record is not None and record.exists():
        expected_sha = _read_record(record)
        sha_source = f"checksum recorded at first download in {record}"
    checks = dict(size=size, expected_sha=expected_sha, sha_source=sha_source, quarantine=quarantine)

    if dest.exists():
        return _present(dest, url, record, checks)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One downloader of a file at a time: a second one (a download job left running by a killed
    # Snakemake, or another working directory sharing this resources folder) waits, then finds the
    # file complete. Without it both appended to one .part and the second renamed an empty one.
    with _download_lock(dest):
        if dest.exists():  # completed by the process we waited for
            return _present(dest, url, record, checks)
        return _download_locked(url, dest, part, size, expected_sha, record, checks, retries, timeout, progress,
                                backoff, quarantine)


def _present(dest: pathlib.Path, url: str, record: pathlib.Path | None, checks: dict[str, Any]) -> pathlib.Path:
    digest = _verify(dest, url, digest=None, **checks)
    if record is not None and not record.exists():
        _write_record(record, digest or sha256_file(dest), dest.name)
    log.info("%s already present and verified; not downloading", dest)
    return dest


#: seconds between two looks at a download lock held by another process
_LOCK_POLL_S = 2.0
#: seconds between two "still waiting" messages
_LOCK_NOTICE_S = 60.0


@contextlib.contextmanager
def _download_lock(dest: pathlib.Path) -> Iterator[None]:
    """Hold ``<dest>.lock`` (an flock: a killed holder frees it) for the whole download, waiting
    while another process holds it. The holder removes the file before it lets go, so no lock
    file is left beside the download; a lock taken on a file removed meanwhile is taken again."""
    path = _sibling(dest, ".lock")
    last_notice = None
    while True:
        lock = LockFile(path)
        if lock.acquire():
            try:
                current = os.path.samestat(os.fstat(lock.handle.fileno()), os.stat(path))
            except FileNotFoundError:
                current = False
            if current:
                break
            lock.release()
            continue
        now = time.monotonic()
        if last_notice is None or now - last_notice >= _LOCK_NOTICE_S:
            log.warning(
                "%s is being downloaded by another process (pid %s, lock %s): waiting for it to finish. "
                "If that process is stuck, end it (kill %s) and this one takes over, resuming its partial file.",
                dest, lock.holder, path, lock.holder,
            )  # fmt: skip
            last_notice = now
        time.sleep(_LOCK_POLL_S)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()


def _hash_open(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(CHUNK_SIZE):
        h.update(chunk)
    return h.hexdigest()


def _download_locked(url, dest, part, size, expected_sha, record, checks, retries, timeout, progress, backoff,
                     quarantine) -> pathlib.Path:
    """download() once it holds the lock of ``dest``."""
    if part.exists():
        with open(part, "rb") as f:
            head = f.read(1024)
        if _looks_like_html(head) or (size is not None and part.stat().st_size > size):
            log.warning("discarding unusable partial download %s", part)
            part.unlink()
    state = _state_of(part)
    if state.nbytes:
        log.info("resuming %s at byte %d", url, state.nbytes)
    else:
        log.info("downloading %s to %s", url, dest)

    failures = 0
    with tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=None if progress else True
    ) as bar:
        while True:
            if size is not None and state.nbytes == size:
                break  # killed after the transfer but before the rename: nothing left to fetch
            if part.exists() and part.stat().st_size != state.nbytes:
                state = _state_of(part)  # a failed write left the file and the hash out of step
            before = state.nbytes
            try:
                if _fetch_once(url, dest, part, state, size, timeout, bar):
                    if expected_sha is None and size is None and not state.length_known:
                        # Nothing says how long the file is: a connection cut early would pass for
                        # its end, and its sha256 would be recorded. The file's own structure decides.
                        problem = integrity_problem(part) if part.exists() else "nothing was received"
                        if problem:
                            raise _NotComplete(f"{url} sent no length, and the {state.nbytes} bytes received are "
                                               f"not a complete file ({problem})")
                    break
            except _TransientError as exc:
                failures = 0 if state.nbytes > before else failures + 1
                if failures > retries and isinstance(exc, _NotComplete):
                    if part.exists():
                        _quarantine(part, quarantine)
                    raise DownloadError(
                        f"{exc}; it is not trusted: no checksum was recorded and it was moved to {quarantine}. The "
                        "connection was probably cut early. Retry later, or use a mirror (`url:`) or a copy "
                        f"downloaded by other means at {dest}."
                    ) from None
                if failures > retries:
                    kept = f" The partial download is kept at {part}; re-run to resume." if part.exists() else ""
                    raise DownloadError(
                        f"giving up on {url} after {failures} attempts without progress ({exc}).{kept} "
                        f"Check the network or the host, or download the file manually to {dest}."
                    ) from exc
                delay = min(backoff * 2 ** max(failures - 1, 0), _MAX_BACKOFF_S)
                log.warning(
                    "download of %s interrupted at byte %d (%s); resuming in %.0f s (failure %d of %d allowed)",
                    url, state.nbytes, exc, delay, failures, retries,
                )  # fmt: skip
                time.sleep(delay)
            except OSError as exc:  # network errors arrive as _TransientError; this is the local disk
                _drop_empty(part)
                raise DownloadError(
                    f"cannot write {part} while downloading {url}: {exc}. Free disk space or fix permissions "
                    "and re-run; the download resumes from what is already on disk."
                ) from exc
            except BaseException:
                _drop_empty(part)
                raise

    if not part.exists():  # an empty file served in one go still becomes a .part first
        part.touch()
    # The checks below are of the file that is renamed into place, read back from disk, not of the
    # bytes streamed (one more read of the file): a writer that ignores the lock (another tool, a
    # copy) must not leave a file whose checksum was never computed behind a "verified" message.
    log.info("verifying %s (reading it back)", part)
    with open(part, "rb") as f:
        hashed = os.fstat(f.fileno())
        on_disk = _hash_open(f)
    streamed = state.hasher.hexdigest()
    if on_disk != streamed or hashed.st_size != state.nbytes:
        _quarantine(part, quarantine)
        raise DownloadError(
            f"{part} changed while {url} was downloaded into it: it holds {hashed.st_size} bytes (sha256 "
            f"{on_disk}), the download wrote {state.nbytes} (sha256 {streamed}). Another process wrote to it. "
            f"It was moved to {quarantine}; make sure nothing else writes to {dest.parent}, delete the "
            "quarantined file and rerun."
        )
    digest = _verify(part, url, digest=on_disk, **checks)
    os.replace(part, dest)
    moved = os.stat(dest)
    if not os.path.samestat(hashed, moved) or moved.st_size != hashed.st_size:
        _quarantine(dest, quarantine)
        raise DownloadError(
            f"{part} was replaced or written to between its checksum and its rename to {dest}: another process "
            f"wrote to it. It was moved to {quarantine}; make sure nothing else writes to {dest.parent}, delete the "
            "quarantined file and rerun."
        )
    if record is not None and not record.exists():
        _write_record(record, digest or sha256_file(dest), dest.name)
    log.info("downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _refuse(archive: pathlib.Path, member: str, why: str) -> DownloadError:
    return DownloadError(
        f"refusing to extract {archive}: member {member!r} {why}. Nothing was extracted; the archive "
        "may be malicious or corrupt -- check where it came from."
    )


def _member_parts(name: str, archive: pathlib.Path, strip: int, label: str | None = None) -> list[str] | None:
    """Path components of a member after `strip` (``.`` ignored); None if stripped away entirely.

    `label` is the member name shown in errors when `name` was normalised first.
    """
    label = name if label is None else label
    if "\x00" in name:
        raise _refuse(archive, label, "contains a NUL byte")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise _refuse(archive, label, "has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, label, "contains '..' and could land outside the target directory")
    return parts[strip:] if len(parts) > strip else None


def _resolve(parts: Sequence[str], symlinks: dict[tuple[str, ...], str]) -> tuple[str, ...] | None:
    """Where `parts` lands after following the archive's own symlinks; None if it leaves the root.

    The extraction directory starts empty, so the archive's symlinks are the only ones that can be
    followed; this catches chains such as ``a -> .`` plus ``b -> a/..`` that a textual check misses.
    """
    stack: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(c)
        target = symlinks.get(tuple(stack))
        if target is not None:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS or target.startswith("/"):
                return None
            stack.pop()  # a relative symlink target is relative to the link's directory
            todo = target.split("/") + todo
    return tuple(stack)


def _plan_tar(tar: tarfile.TarFile, archive: pathlib.Path, strip: int) -> list[tarfile.TarInfo]:
    """Validate every member (before anything is written) and return them renamed for `strip`."""
    planned: list[tuple[tarfile.TarInfo, list[str], list[str] | None]] = []
    symlinks: dict[tuple[str, ...], str] = {}
    for m in tar.getmembers():
        parts = _member_parts(m.name, archive, strip)
        if parts is None:
            continue
        if m.ischr() or m.isblk() or m.isfifo():
            raise _refuse(archive, m.name, "is a device file or FIFO")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, f"has an unsupported type {m.type!r}")
        link_parts = None
        if m.issym():
            if m.linkname.startswith("/") or re.match(r"[A-Za-z]:", m.linkname):
                raise _refuse(archive, m.name, f"is a symlink to the absolute path {m.linkname!r}")
            symlinks[tuple(parts)] = m.linkname
        elif m.islnk():
            try:
                link_parts = _member_parts(m.linkname, archive, strip)
            except DownloadError:
                raise _refuse(archive, m.name, f"is a hard link to {m.linkname!r} outside the target directory") from None
            if link_parts is None:
                raise _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, removed by strip_components")
        planned.append((m, parts, link_parts))

    out = []
    for m, parts, link_parts in planned:
        if _resolve(parts, symlinks) is None:
            what = f"is a symlink to {m.linkname!r}, which" if m.issym() else "goes through a symlink that"
            raise _refuse(archive, m.name, f"{what} points outside the target directory")
        if link_parts is not None and _resolve(link_parts, symlinks) is None:
            raise _refuse(archive, m.name, f"is a hard link to {m.linkname!r} outside the target directory")
        name = "/".join(parts)
        linkname = "/".join(link_parts) if link_parts is not None else m.linkname
        if name != m.name or linkname != m.linkname:
            m = copy.copy(m)  # noqa: PLW2901 - renamed copy for strip_components / "./" prefixes
            m.name, m.linkname = name, linkname
        out.append(m)
    return out


def _plan_zip(zf: zipfile.ZipFile, archive: pathlib.Path, strip: int) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Validate every zip member; zip symlinks are written as plain files, so only paths matter."""
    out = []
    for info in zf.infolist():
        # Windows tools sometimes write backslashes; treat them as separators so '..\\x' is caught.
        parts = _member_parts(info.filename.replace("\\", "/"), archive, strip, label=info.filename)
        if parts is not None:
            out.append((info, parts))
    return out


def _archive_kind(archive: pathlib.Path) -> str:
    """'tar' or 'zip', decided by content: downloaded files often have misleading names."""
    with open(archive, "rb") as f:
        head = f.read(1024)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    if zipfile.is_zipfile(archive):  # e.g. self-extracting zips with a prefix
        return "zip"
    if _looks_like_html(head):
        raise DownloadError(
            f"{archive} is a web page (HTML), not an archive -- probably a quota or login page saved by "
            "mistake. Delete it and download the file again (or manually from a mirror)."
        )
    raise DownloadError(
        f"{archive} is neither a tar (.tar, .tar.gz, .tgz, ...) nor a zip archive; it may be truncated "
        "or corrupt. Delete it and download it again."
    )


@contextlib.contextmanager
def _wrap_errors(archive: pathlib.Path) -> Iterator[None]:
    try:
        yield
    except DownloadError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DownloadError(
            f"extracting {archive} failed: {exc}. The archive may be truncated or corrupt (delete it and "
            "download it again), or the disk may be full."
        ) from exc


def safe_extract(
    archive: str | os.PathLike[str], target_dir: str | os.PathLike[str], *, strip_components: int = 0
) -> pathlib.Path:
    """Extract a tar (any compression) or zip archive into `target_dir`, all or nothing.

    Every member is checked before anything is written. Extraction happens in
    ``<target_dir>.tmp-<pid>``, which is renamed to `target_dir` with a ``.complete`` marker inside
    once done, so a killed job never leaves a half-filled `target_dir`. A complete `target_dir` is
    returned as is; an existing one without the marker is refused rather than deleted, since it may
    hold someone's data. For .tar.gz the validation needs one decompression pass of its own.
    """
    if strip_components < 0:
        raise ValueError("strip_components must be >= 0")
    archive = pathlib.Path(archive)
    target = pathlib.Path(target_dir)
    if target.exists() or target.is_symlink():
        if target.is_dir() and (target / COMPLETE_MARKER).is_file():
            log.info("%s already extracted; skipping", target)
            return target
        raise DownloadError(
            f"{target} exists but is not a complete extraction (no {COMPLETE_MARKER} marker inside); "
            f"remove or move it, then re-run to extract {archive} there."
        )
    if not archive.is_file():
        raise DownloadError(f"archive {archive} not found; download it first.")

    with _wrap_errors(archive):
        kind = _archive_kind(archive)
        arch: tarfile.TarFile | zipfile.ZipFile = (
            tarfile.open(archive, "r:*") if kind == "tar" else zipfile.ZipFile(archive)
        )
    with arch:
        with _wrap_errors(archive):
            plan = _plan_tar(arch, archive, strip_components) if isinstance(arch, tarfile.TarFile) else (
                _plan_zip(arch, archive, strip_components)
            )
        if not plan:
            log.warning("%s has no members left after strip_components=%d", archive, strip_components)

        log.info("extracting %s to %s", archive, target)
        # In <target>.tmp-<pid> (leftovers of killed extractions removed first), renamed when complete.
        try:
            with atomic_folder(target, hidden=False, replace=False) as tmp, _wrap_errors(archive):
                if isinstance(arch, tarfile.TarFile):
                    if faults.FAULT == "unpack:mid":  # fault injection (tests): die half way through
                        arch.extractall(tmp, members=plan[: len(plan) // 2])  # type: ignore[arg-type]
                        faults.at("unpack:mid")
                    if _HAS_DATA_FILTER:
                        arch.extractall(tmp, members=plan, filter="data")  # type: ignore[arg-type]
                    else:
                        arch.extractall(tmp, members=plan)  # type: ignore[arg-type]
                else:
                    for info, parts in plan:  # type: ignore[misc]
                        out = tmp.joinpath(*parts)
                        if info.is_dir():
                            out.mkdir(parents=True, exist_ok=True)
                            continue
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with arch.open(info) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst, CHUNK_SIZE)
                        mode = info.external_attr >> 16
                        if stat.S_ISREG(mode) and mode & stat.S_IXUSR:
                            out.chmod(0o755)
                (tmp / COMPLETE_MARKER).write_text(f"extracted from {archive.name}\n", encoding="utf-8")
        except FileExistsError:  # the rename: target appeared meanwhile
            if not (target / COMPLETE_MARKER).is_file():
                raise DownloadError(
                    f"could not move the extracted {tmp_name(target, hidden=False)} to {target} (it appeared "
                    f"meanwhile?); remove {target} and re-run."
                ) from None
            log.info("%s was completed by another process meanwhile", target)
    log.info("extracted %s to %s", archive, target)
    return target
