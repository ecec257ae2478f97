"""Fetch the official DCASE 2025 Task 2 archives from Zenodo, verify them and unpack them.

Layout (the DCASE baseline's convention, which the reader expects)::

    <out>/dev_data/raw/<machine>/{train,test,supplemental}/...    # --what dev
    <out>/eval_data/raw/<machine>/{train,supplemental}/...        # --what additional
    <out>/eval_data/raw/<machine>/test/...                        # --what eval
    <out>/archives/<what>/<archive>.zip(.part|.done)              # downloads and markers

The additional-training zip (``eval_data_<machine>_train.zip``) and the evaluation zip
(``eval_data_<machine>_test.zip``) of the same machine merge into one machine folder.

Guarantees:

* Nothing already downloaded is lost: bytes go to ``<archive>.part`` and an interrupted
  transfer resumes with an HTTP ``Range`` request; a server that ignores ``Range`` (answers
  200 instead of 206) makes the download restart cleanly from byte 0.
* A file gets its final name only after its size and MD5 match the Zenodo record; on an MD5
  mismatch the ``.part`` is deleted and :class:`DownloadError` names the file and both sums.
* Unpacking extracts into a hidden temp folder inside the destination and then moves the
  machine folders into place, so an interrupted or failed unpack never leaves a half tree
  (a stale temp folder is removed by the next run). Members with absolute paths or ``..``
  are refused before anything is written (zip-slip).
* After a verified unpack a ``<archive>.done`` marker (JSON: md5, size, folders) is written
  and, unless ``keep_archives``, the zip is deleted; a re-run skips archives whose marker
  matches the record's MD5 and whose folders still exist, without any request for the zip.

Every failure is a :class:`DownloadError` whose message is a single line naming the file or
URL and the problem. Only the standard library (urllib, zipfile, hashlib) and tqdm are used.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from tqdm import tqdm

ZENODO_RECORDS = {"dev": 15097779, "additional": 15392814, "eval": 15519362}
DEFAULT_ZENODO_URL = "https://zenodo.org"
ZENODO_URL_ENV = "BOHB_SEARCH_ZENODO_URL"

# Which split folder each record unpacks into (relative to --out).
SPLIT_DIRS = {"dev": Path("dev_data") / "raw", "additional": Path("eval_data") / "raw", "eval": Path("eval_data") / "raw"}
ARCHIVE_DIR = "archives"
UNPACK_TMP_PREFIX = ".unpack-"
USER_AGENT = "bohb-search-asd-downloader/0.1 (+python urllib)"
# Folders a DCASE machine folder holds; an archive whose top level is one of these lacks
# the machine folder and is placed under one named after the archive.
_SPLIT_NAMES = {"train", "test", "supplemental"}
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


@dataclass
class DownloadReport:
    """What :func:`download_dataset` did (or, with ``dry_run``, would do)."""

    what: str
    record_id: int
    dest_root: Path
    dry_run: bool = False
    planned: list[RemoteFile] = field(default_factory=list)  # selected archives
    downloaded: list[str] = field(default_factory=list)  # archive names fetched (fully or resumed)
    skipped: list[str] = field(default_factory=list)  # archive names already done (marker)
    unpacked: list[Path] = field(default_factory=list)  # top-level folders placed/merged
    ignored: list[str] = field(default_factory=list)  # record files that are not zips

    def summary(self) -> str:
        lines = []
        total = sum(f.size for f in self.planned)
        head = "dry run: would fetch" if self.dry_run else "selected"
        lines.append(
            f"{self.what} (Zenodo record {self.record_id}) -> {self.dest_root}: "
            f"{head} {len(self.planned)} archive(s), {_human(total)}"
        )
        skipped = set(self.skipped)
        for f in self.planned:
            tag = "done, skip" if f.name in skipped else ("fetch" if self.dry_run else "ok")
            lines.append(f"  {f.name:<40s} {_human(f.size):>10s}  [{tag}]")
        if not self.dry_run:
            lines.append(
                f"downloaded {len(self.downloaded)}, skipped {len(self.skipped)}, "
                f"unpacked folders {len(self.unpacked)}"
            )
        if self.ignored:
            lines.append("ignored (not zip archives): " + ", ".join(self.ignored))
        return "\n".join(lines)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - unreachable


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


def _base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(ZENODO_URL_ENV) or DEFAULT_ZENODO_URL
    return url.rstrip("/")


def _reason(exc: BaseException) -> str:
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
    url = f"{_base_url(base_url)}/api/records/{record_id}"
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
            raise DownloadError(f"{url}: cannot list Zenodo record {record_id} ({_reason(exc)})") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: cannot reach Zenodo ({_reason(exc)})") from None
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
            link = f"{_base_url(base_url)}/records/{record_id}/files/{urllib.parse.quote(name)}?download=1"
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


def _md5_of(path: Path, chunk_size: int = 1 << 20) -> str:
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
        if final.stat().st_size == remote.size and (remote.md5 is None or _md5_of(final) == remote.md5):
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
            actual = _md5_of(part, chunk_size)
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
            raise _Retry(_reason(exc)) from None
        raise DownloadError(f"{remote.name}: cannot download {remote.url} ({_reason(exc)})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(_reason(exc)) from None

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
                        raise _Retry(_reason(exc)) from None
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


# --------------------------------------------------------------------------------------
# Atomic unpack
# --------------------------------------------------------------------------------------


def _check_member(name: str, zip_path: Path) -> PurePosixPath | None:
    """Normalised relative path of a member, None to skip it; DownloadError on zip-slip."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"{zip_path}: refusing member with absolute path {name!r} (zip-slip)")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(f"{zip_path}: refusing member with '..' in its path {name!r} (zip-slip)")
    if not parts or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
        return None
    return PurePosixPath(*parts)


def _remove_stale_tmp(dest_root: Path) -> None:
    if dest_root.is_dir():
        for p in dest_root.iterdir():
            if p.name.startswith(UNPACK_TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def _merge_move(src: Path, dst: Path, zip_path: Path) -> None:
    """Move ``src`` to ``dst``; an existing directory is merged, an existing file replaced."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _merge_move(child, dst / child.name, zip_path)
        src.rmdir()
        return
    if src.is_file() and dst.is_file():
        os.replace(src, dst)
        return
    raise DownloadError(f"{zip_path}: cannot place {src.name}: {dst} exists and is a {'folder' if dst.is_dir() else 'file'}")


def _unpack(zip_path: Path, dest_root: Path, machine: str | None) -> tuple[list[Path], list[str]]:
    """Implementation of :func:`unpack_archive`; also returns the placed entries two levels
    deep (``bearing/train``, ``bearing/attributes_00.csv``) for the ``.done`` marker."""
    zip_path = Path(zip_path)
    dest_root = Path(dest_root)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DownloadError(f"{zip_path}: not a readable zip archive ({_reason(exc)})") from None
    with zf:
        members = []
        for info in zf.infolist():
            rel = _check_member(info.filename, zip_path)
            if rel is not None:
                members.append((info, rel))
        if not members:
            raise DownloadError(f"{zip_path}: archive holds no files")
        dest_root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(dest_root)
        tmp = Path(tempfile.mkdtemp(prefix=UNPACK_TMP_PREFIX + zip_path.stem + "-", dir=dest_root))
        try:
            for info, rel in members:
                target = tmp.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            top = sorted(tmp.iterdir())
            if machine and any(p.name in _SPLIT_NAMES and p.is_dir() for p in top):
                wrapped = tmp / (UNPACK_TMP_PREFIX + "wrap")
                wrapped.mkdir()
                for p in top:
                    os.replace(p, wrapped / p.name)
                inner = tmp / machine
                os.replace(wrapped, inner)
                top = [inner]
            entries = []
            for p in top:
                entries += [f"{p.name}/{c.name}" for c in sorted(p.iterdir())] if p.is_dir() else [p.name]
            placed = []
            for p in top:
                _merge_move(p, dest_root / p.name, zip_path)
                placed.append(dest_root / p.name)
        except DownloadError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            # RuntimeError: encrypted member; NotImplementedError: unsupported compression
            raise DownloadError(f"{zip_path}: unpacking failed ({_reason(exc)}); nothing was placed") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return placed, entries


def unpack_archive(zip_path: Path, dest_root: Path, machine: str | None = None) -> list[Path]:
    """Extract ``zip_path`` atomically under ``dest_root``; return the top-level paths placed.

    All members are checked first (absolute paths and ``..`` are refused), then extracted into
    a hidden temp folder inside ``dest_root`` (same filesystem) and finally moved into place,
    merging into machine folders that already exist (train from one zip, test from another).
    On any failure the temp folder is removed and nothing appears under ``dest_root``. When the
    archive has no machine folder (its top level is ``train/``/``test/``/``supplemental/``) and
    ``machine`` is given, the content goes to ``dest_root/<machine>/``.
    """
    return _unpack(Path(zip_path), Path(dest_root), machine)[0]


# --------------------------------------------------------------------------------------
# Whole dataset
# --------------------------------------------------------------------------------------


def _marker_path(archive_dir: Path, name: str) -> Path:
    return archive_dir / (name + ".done")


def _marker_ok(marker: Path, remote: RemoteFile, dest_root: Path) -> bool:
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or info.get("md5") != remote.md5 or info.get("size") != remote.size:
        return False
    folders = info.get("folders") or []
    return bool(folders) and all((dest_root / f).exists() for f in folders)


def _select(files: Iterable[RemoteFile], machines: Iterable[str] | None, record_id: int) -> tuple[list[RemoteFile], list[str]]:
    files = list(files)
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    ignored = [f.name for f in files if not f.name.lower().endswith(".zip")]
    if machines:
        wanted = {m.strip().lower() for m in machines if m and m.strip()}
        available = sorted({f.machine for f in zips}, key=str.lower)
        unknown = sorted(m for m in wanted if m not in {a.lower() for a in available})
        if unknown:
            raise DownloadError(
                f"Zenodo record {record_id}: no archive for machine(s) {', '.join(unknown)}; "
                f"available: {', '.join(available) or 'none'}"
            )
        zips = [f for f in zips if f.machine.lower() in wanted]
    return sorted(zips, key=lambda f: f.name), ignored


def _check_space(out: Path, todo: list[RemoteFile], keep_archives: bool) -> None:
    if not todo:
        return
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    total = sum(f.size for f in todo)
    # WAVs barely compress: unpacked ≈ archive size; the zip lives next to its tree until deleted.
    need = 2 * total if keep_archives else total + max(f.size for f in todo)
    if free < need:
        raise DownloadError(f"{out}: not enough free disk space (need about {_human(need)}, have {_human(free)})")


def download_dataset(
    what: str,
    out: str | Path,
    machines: Iterable[str] | None = None,
    base_url: str | None = None,
    keep_archives: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> DownloadReport:
    """Download, verify and unpack one DCASE 2025 Task 2 record (``dev``/``additional``/``eval``).

    See the module docstring for the layout under ``out``. ``machines`` keeps only archives of
    those machines (case-insensitive; an unknown machine is an error listing the available
    ones). ``dry_run`` lists what would be fetched (with sizes) and writes nothing.
    """
    if what not in ZENODO_RECORDS:
        raise DownloadError(f"unknown dataset part {what!r}: choose one of {', '.join(ZENODO_RECORDS)}")
    record_id = ZENODO_RECORDS[what]
    out = Path(out)
    dest_root = out / SPLIT_DIRS[what]
    archive_dir = out / ARCHIVE_DIR / what
    files = list_record_files(record_id, base_url=base_url)
    selected, ignored = _select(files, machines, record_id)
    report = DownloadReport(what=what, record_id=record_id, dest_root=dest_root, dry_run=dry_run, planned=selected, ignored=ignored)
    done = [f for f in selected if _marker_ok(_marker_path(archive_dir, f.name), f, dest_root)]
    report.skipped = [f.name for f in done]
    if dry_run:
        return report
    todo = [f for f in selected if f not in done]
    _check_space(out, [f for f in todo if not (archive_dir / f.name).exists()], keep_archives)

    for remote in todo:
        final = archive_dir / remote.name
        had_final = final.exists()
        path = download_file(remote, archive_dir, progress=progress)
        if not had_final:
            report.downloaded.append(remote.name)
        placed, entries = _unpack(path, dest_root, remote.machine)
        report.unpacked.extend(placed)
        marker = _marker_path(archive_dir, remote.name)
        tmp_marker = marker.with_name(marker.name + ".tmp")
        tmp_marker.write_text(json.dumps({
            "name": remote.name, "size": remote.size, "md5": remote.md5, "url": remote.url,
            "folders": entries,
        }, indent=1))
        os.replace(tmp_marker, marker)
        if not keep_archives:
            path.unlink()
    return report


# --------------------------------------------------------------------------------------
# Command line (the project CLI delegates here; also ``python -m data.download``)
# --------------------------------------------------------------------------------------


def add_download_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--what", required=True, choices=sorted(ZENODO_RECORDS), help="which Zenodo record to fetch")
    parser.add_argument("--out", required=True, type=Path, help="dataset root (dev_data/raw, eval_data/raw, archives/)")
    parser.add_argument("--machines", nargs="+", default=None, help="only archives of these machines (e.g. bearing fan)")
    parser.add_argument("--keep-archives", action="store_true", help="keep the zips after a verified unpack")
    parser.add_argument("--dry-run", action="store_true", help="list what would be fetched, with sizes; write nothing")
    parser.add_argument("--base-url", default=None, help=f"Zenodo base URL (default ${ZENODO_URL_ENV} or {DEFAULT_ZENODO_URL})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_download(args: argparse.Namespace) -> int:
    """Run a parsed ``download`` command; prints the summary, returns an exit code."""
    machines = None
    if args.machines:
        machines = [m for item in args.machines for m in item.split(",") if m.strip()]
    try:
        report = download_dataset(
            args.what, args.out, machines=machines, base_url=args.base_url,
            keep_archives=args.keep_archives, dry_run=args.dry_run, progress=not args.no_progress,
        )
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_download_arguments(argparse.ArgumentParser(prog="python -m data.download", description=__doc__.splitlines()[0]))
    return run_download(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
