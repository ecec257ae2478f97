"""Zenodo over HTTP: list a record's files, download one with resume (HTTP Range), size and MD5
checks, and retries. Only the standard library (urllib, hashlib) and tqdm are used."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ZENODO_RECORDS = {"dev": 15097779, "additional": 15392814, "eval": 15519362}
DEFAULT_ZENODO_URL = "https://zenodo.org"
ZENODO_URL_ENV = "BOHB_SEARCH_ZENODO_URL"
USER_AGENT = "bohb-search-asd-downloader/0.1 (+python urllib)"
# HTTP statuses worth retrying (rate limit, server trouble).
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A download/verify/unpack failure; ``str(err)`` is one line naming the file or URL."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record."""

    name: str
    size: int
    md5: str | None  # lower-case hex, None when the record gives no MD5
    url: str

    @property
    def machine(self) -> str:
        return machine_from_archive(self.name)


def machine_from_archive(name: str) -> str:
    """``dev_bearing.zip`` → ``bearing``; ``eval_data_ToyRCCar_train.zip`` → ``ToyRCCar``;
    ``eval_data_3DPrinter_train_r2.zip`` → ``3DPrinter``."""
    stem = name[:-4] if name.lower().endswith(".zip") else name
    tokens = stem.split("_")
    while tokens and tokens[0].lower() in {"dev", "eval", "data", "additional"}:
        tokens.pop(0)
    while tokens and (tokens[-1].lower() in {"train", "test", "data"} or re.fullmatch(r"r\d+", tokens[-1].lower())):
        tokens.pop()
    return "_".join(tokens) if tokens else stem


def resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(ZENODO_URL_ENV) or DEFAULT_ZENODO_URL
    return url.rstrip("/")


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        r = exc.reason
        return f"{type(r).__name__}: {r}" if isinstance(r, BaseException) else str(r)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    return req


# --------------------------------------------------------------------------------------
# Zenodo record listing
# --------------------------------------------------------------------------------------


def list_record_files(record_id: int, base_url: str | None = None, timeout: float = 60) -> list[RemoteFile]:
    """Files (name, size, md5, download URL) of a Zenodo record, from ``GET {base}/api/records/{id}``."""
    url = f"{resolve_base_url(base_url)}/api/records/{record_id}"
    payload = None
    for attempt in range(3):
        try:
            with urllib.request.urlopen(_request(url, {"Accept": "application/json"}), timeout=timeout) as resp:
                payload = resp.read()
            break
        except urllib.error.HTTPError as exc:
            if exc.code in _RETRY_STATUS and attempt < 2:
                time.sleep(_retry_after(exc, attempt))
                continue
            raise DownloadError(f"{url}: cannot list Zenodo record {record_id} ({describe_error(exc)})") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: cannot reach Zenodo ({describe_error(exc)})") from None
    try:
        data = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise DownloadError(f"{url}: record {record_id} is not valid JSON ({exc})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict):  # InvenioRDM "/files" style: {"entries": [...]}
        files = files.get("entries")
        if isinstance(files, dict):
            files = list(files.values())
    if not isinstance(files, list):
        raise DownloadError(f"{url}: record {record_id} has no 'files' list")
    out: list[RemoteFile] = []
    for entry in files:
        try:
            name = str(entry["key"])
            size = int(entry["size"])
        except (KeyError, TypeError, ValueError):
            raise DownloadError(f"{url}: record {record_id} has a file entry without key/size: {entry!r}") from None
        checksum = str(entry.get("checksum") or "")
        md5 = checksum.split(":", 1)[1].lower() if checksum.lower().startswith("md5:") else None
        links = entry.get("links") or {}
        link = links.get("self") or links.get("content") or links.get("download")
        if link:
            link = urllib.parse.urljoin(url, link)
        else:
            link = f"{resolve_base_url(base_url)}/records/{record_id}/files/{urllib.parse.quote(name)}?download=1"
        out.append(RemoteFile(name=name, size=size, md5=md5, url=link))
    return out


def _retry_after(exc: urllib.error.HTTPError, attempt: int, backoff: float = 1.0) -> float:
    header = exc.headers.get("Retry-After") if exc.headers else None
    if header and header.strip().isdigit():
        return min(float(header), 60.0)
    return backoff * (2**attempt)


# --------------------------------------------------------------------------------------
# Single file download with resume + verification
# --------------------------------------------------------------------------------------


def md5_of(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            h.update(block)
    return h.hexdigest()


class _Retry(Exception):
    """Transient failure inside one attempt; the .part keeps what arrived."""


def download_file(
    remote: RemoteFile,
    dest_dir: Path,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    retries: int = 3,
    *,
    timeout: float = 60,
    backoff: float = 1.0,
) -> Path:
    """Download ``remote`` to ``dest_dir/remote.name`` and return that path.

    Bytes go to ``<name>.part``; an existing ``.part`` is resumed with ``Range``. A 200 answer
    to a ranged request (server ignores ``Range``) restarts from byte 0. After the last byte the
    size and then the MD5 are checked; only then is the file renamed. A final file that already
    exists with the right size and MD5 is returned without any request. Transient failures
    (connection cut, timeouts, HTTP 408/429/5xx) are retried ``retries`` times, waiting
    ``backoff * 2**k`` seconds; other HTTP errors fail at once.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.name
    part = dest_dir / (remote.name + ".part")

    if final.exists():
        if final.stat().st_size == remote.size and (remote.md5 is None or md5_of(final) == remote.md5):
            return final
        final.unlink()  # stale or damaged: fetch again

    resumed = False  # the .part was assembled from more than one response
    restarted_after_mismatch = False
    failures = 0
    last_error = ""
    while True:
        try:
            got_resumed = _fetch_into(remote, part, progress, chunk_size, timeout)
            resumed = resumed or got_resumed
        except _Retry as exc:
            last_error = str(exc)
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"{remote.name}: download failed after {failures} attempt(s) from {remote.url} ({last_error}); "
                    f"{part.stat().st_size if part.exists() else 0} of {remote.size} bytes kept in {part}"
                ) from None
            resumed = resumed or (part.exists() and part.stat().st_size > 0)
            if progress:
                tqdm.write(f"{remote.name}: {last_error}; retry {failures}/{retries}", file=sys.stderr)
            time.sleep(backoff * (2 ** (failures - 1)))
            continue

        size = part.stat().st_size
        if size != remote.size:  # only larger can reach here (shorter is retried in _fetch_into)
            part.unlink()
            raise DownloadError(f"{remote.name}: size mismatch from {remote.url} (expected {remote.size} bytes, got {size})")
        if remote.md5 is not None:
            actual = md5_of(part, chunk_size)
            if actual != remote.md5:
                part.unlink()
                if resumed and not restarted_after_mismatch:
                    # The kept prefix may come from an older version of the file: one clean retry.
                    restarted_after_mismatch = True
                    resumed = False
                    continue
                raise DownloadError(
                    f"{remote.name}: checksum mismatch from {remote.url} (expected md5 {remote.md5}, got {actual}); "
                    "partial file deleted"
                )
        os.replace(part, final)
        return final


def _fetch_into(remote: RemoteFile, part: Path, progress: bool, chunk_size: int, timeout: float) -> bool:
    """One HTTP attempt appending to ``part``. Returns True when it resumed (206 from offset>0).

    Raises :class:`_Retry` for transient trouble, :class:`DownloadError` for permanent.
    """
    offset = part.stat().st_size if part.exists() else 0
    if offset > remote.size:
        part.unlink()
        offset = 0
    if offset == remote.size and offset > 0:
        return True  # complete .part from an earlier run: just verify
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = urllib.request.urlopen(_request(remote.url, headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # our range is unsatisfiable: start over
            part.unlink()
            raise _Retry(f"HTTP 416 for range from byte {offset}, restarting") from None
        if exc.code in _RETRY_STATUS:
            raise _Retry(describe_error(exc)) from None
        raise DownloadError(f"{remote.name}: cannot download {remote.url} ({describe_error(exc)})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(describe_error(exc)) from None

    with resp:
        status = resp.status
        resumed = False
        if offset and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()  # server returned a different range: keep nothing we cannot place
                raise _Retry(f"server answered range starting at {start}, asked {offset}; restarting")
            resumed = True
        elif status == 200:
            offset = 0  # no range asked, or the server ignored it: rewrite from byte 0
        elif status != 206:
            raise DownloadError(f"{remote.name}: unexpected HTTP {status} from {remote.url}")
        mode = "ab" if offset else "wb"
        bar = tqdm(
            total=remote.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=remote.name, disable=not progress, leave=False,
        )
        written = offset
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        block = resp.read(chunk_size)
                    except (OSError, http.client.HTTPException) as exc:
                        # http.client.IncompleteRead: connection closed mid-body
                        raise _Retry(describe_error(exc)) from None
                    if not block:
                        break
                    fh.write(block)
                    written += len(block)
                    bar.update(len(block))
                    if written > remote.size:
                        break  # more than the record announces: stop, the size check fails
        finally:
            bar.close()
    if part.stat().st_size < remote.size:
        raise _Retry(f"connection ended after {part.stat().st_size} of {remote.size} bytes")
    return resumed


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None
