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
URL and the problem. HTTP lives in :mod:`data.zenodo`; only the standard library and tqdm are used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable


from .zenodo import (
    DEFAULT_ZENODO_URL,
    ZENODO_RECORDS,
    ZENODO_URL_ENV,
    DownloadError,
    RemoteFile,
    describe_error,
    download_file,
    list_record_files,
    machine_from_archive,
)

__all__ = ["DownloadError", "DownloadReport", "RemoteFile", "download_dataset", "download_file", "list_record_files",
           "machine_from_archive", "unpack_archive", "ZENODO_RECORDS"]


# Which split folder each record unpacks into (relative to --out).
SPLIT_DIRS = {"dev": Path("dev_data") / "raw", "additional": Path("eval_data") / "raw", "eval": Path("eval_data") / "raw"}
ARCHIVE_DIR = "archives"
UNPACK_TMP_PREFIX = ".unpack-"
# Folders a DCASE machine folder holds; an archive whose top level is one of these lacks
# the machine folder and is placed under one named after the archive.
_SPLIT_NAMES = {"train", "test", "supplemental"}


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
        raise DownloadError(f"{zip_path}: not a readable zip archive ({describe_error(exc)})") from None
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
            raise DownloadError(f"{zip_path}: unpacking failed ({describe_error(exc)}); nothing was placed") from None
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
