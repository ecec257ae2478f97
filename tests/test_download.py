"""Tests for data/download.py against a real HTTP server on 127.0.0.1.

The server (http.server in a thread, free port) plays Zenodo: it serves record JSON at
``/api/records/<id>`` and the archives at ``/api/records/<id>/files/<name>/content``, built at
run time in tmp_path from tiny WAVs in DCASE naming. Faults are injected by the server's
behaviour (cut the connection after N bytes, ignore Range, redirect, wrong checksum), never by
mocking the client's HTTP layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data import download as dl
from data.download import (
    ZENODO_RECORDS,
    DownloadError,
    RemoteFile,
    download_dataset,
    download_file,
    list_record_files,
    unpack_archive,
)

SR = 16_000


# --------------------------------------------------------------------------------------
# Fake Zenodo server
# --------------------------------------------------------------------------------------


class FakeZenodo:
    def __init__(self):
        self.content: dict[str, bytes] = {}  # URL path -> bytes
        self.records: dict[int, list[dict]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers)
        self.cuts: dict[str, list[int]] = {}  # path -> byte counts to send before cutting, one per request
        self.ignore_range: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                fake._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # cut connections are expected
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # ---- setup helpers
    def content_path(self, record_id: int, name: str) -> str:
        return f"/api/records/{record_id}/files/{name}/content"

    def add_record(self, record_id: int, files: dict[str, bytes], md5_override: dict[str, str] | None = None,
                   link_style: str = "content", extra_entries: list[dict] | None = None) -> None:
        entries = []
        for name, data in files.items():
            path = self.content_path(record_id, name)
            self.content[path] = data
            md5 = (md5_override or {}).get(name, hashlib.md5(data).hexdigest())
            if link_style == "redirect":
                link_path = f"/records/{record_id}/files/{name}"
                self.redirects[link_path] = path
            else:
                link_path = path
            entries.append({"key": name, "size": len(data), "checksum": f"md5:{md5}",
                            "links": {"self": self.url + link_path}})
        self.records[record_id] = entries + list(extra_entries or [])

    # ---- inspection helpers
    def gets(self, name: str) -> list[dict[str, str]]:
        """Headers of every request for the archive ``name`` (content path only)."""
        with self.lock:
            return [h for p, h in self.requests if p.endswith(f"/files/{name}/content")]

    def archive_requests(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests if "/files/" in p]

    # ---- request handling
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.requests.append((path, {k.lower(): v for k, v in h.headers.items()}))
        if path in self.redirects:
            h.send_response(302)
            h.send_header("Location", self.url + self.redirects[path])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        m = re.fullmatch(r"/api/records/(\d+)", path)
        if m and int(m.group(1)) in self.records:
            body = json.dumps({"id": int(m.group(1)), "files": self.records[int(m.group(1))]}).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if path not in self.content:
            h.send_error(404, "not found")
            return
        data = self.content[path]
        start = 0
        rng = h.headers.get("Range")
        if rng and path not in self.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                h.send_error(416, "range not satisfiable")
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        with self.lock:
            cut = self.cuts[path].pop(0) if self.cuts.get(path) else None
        if cut is None:
            h.wfile.write(body)
            return
        h.wfile.write(body[:cut])
        h.wfile.flush()
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@pytest.fixture
def server():
    fake = FakeZenodo()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv(dl.ZENODO_URL_ENV, raising=False)


# --------------------------------------------------------------------------------------
# Fixture archives (tiny WAVs in DCASE naming)
# --------------------------------------------------------------------------------------


def wav_bytes(seed: int, n: int = 800) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(buf, (rng.standard_normal(n) * 0.1).astype(np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def dcase_names(machine: str, split: str, count: int = 2) -> list[str]:
    if split == "train":
        return [f"{machine}/train/section_00_source_train_normal_{i:04d}_vel_6_loc_A.wav" for i in range(count)]
    if split == "test":
        return [f"{machine}/test/section_00_source_test_{lab}_{i:04d}_vel_6_loc_A.wav"
                for i, lab in zip(range(count), ["normal", "anomaly"] * count)]
    return [f"{machine}/supplemental/section_00_supplemental_{i:04d}.wav" for i in range(count)]


def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def dev_zip(machine: str, seed: int = 0) -> tuple[bytes, dict[str, bytes]]:
    names = dcase_names(machine, "train") + dcase_names(machine, "test") + dcase_names(machine, "supplemental", 1)
    members = {n: wav_bytes(seed + i) for i, n in enumerate(names)}
    members[f"{machine}/attributes_00.csv"] = b"file_name,d1p,d1v\n"
    return make_zip(members), members


def rel_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


DEV = ZENODO_RECORDS["dev"]
ADD = ZENODO_RECORDS["additional"]
EVAL = ZENODO_RECORDS["eval"]


@pytest.fixture
def dev_record(server):
    bearing, bearing_members = dev_zip("bearing", 0)
    fan, fan_members = dev_zip("fan", 100)
    server.add_record(DEV, {"dev_bearing.zip": bearing, "dev_fan.zip": fan},
                      extra_entries=[{"key": "README.md", "size": 3, "checksum": "md5:0",
                                      "links": {"self": server.url + "/readme"}}])
    return {"dev_bearing.zip": bearing_members, "dev_fan.zip": fan_members}


# --------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------


def test_list_record_files_parses_record_and_honours_env_url(server, dev_record, monkeypatch):
    monkeypatch.setenv(dl.ZENODO_URL_ENV, server.url + "/")
    files = {f.name: f for f in list_record_files(DEV)}
    assert set(files) == {"dev_bearing.zip", "dev_fan.zip", "README.md"}
    data = server.content[server.content_path(DEV, "dev_fan.zip")]
    assert files["dev_fan.zip"] == RemoteFile(
        name="dev_fan.zip", size=len(data), md5=hashlib.md5(data).hexdigest(),
        url=server.url + server.content_path(DEV, "dev_fan.zip"),
    )
    assert server.requests[0][0] == f"/api/records/{DEV}"
    assert "json" in server.requests[0][1].get("accept", "")


@pytest.mark.parametrize("kind", ["refused", "missing_record"])
def test_unreachable_or_missing_record_is_one_line_error_naming_url(server, kind):
    if kind == "refused":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{s.getsockname()[1]}"
    else:
        base = server.url  # server up, record unknown -> 404
    with pytest.raises(DownloadError) as err:
        list_record_files(DEV, base_url=base)
    msg = str(err.value)
    assert f"{base}/api/records/{DEV}" in msg
    assert "\n" not in msg
    if kind == "missing_record":
        assert "404" in msg
    else:
        assert "cannot reach" in msg


# --------------------------------------------------------------------------------------
# download_file: resume, Range ignored, checksum
# --------------------------------------------------------------------------------------


def _remote(server, record_id: int, name: str) -> RemoteFile:
    return next(f for f in list_record_files(record_id, base_url=server.url) if f.name == name)


def test_interrupted_transfer_resumes_with_range(server, dev_record, tmp_path):
    path = server.content_path(DEV, "dev_bearing.zip")
    data = server.content[path]
    cut = len(data) // 3
    server.cuts[path] = [cut]  # first request: connection closed after `cut` bytes
    remote = _remote(server, DEV, "dev_bearing.zip")
    out = download_file(remote, tmp_path / "dl", progress=False, chunk_size=1024, backoff=0)
    assert out == tmp_path / "dl" / "dev_bearing.zip"
    assert out.read_bytes() == data
    assert not (tmp_path / "dl" / "dev_bearing.zip.part").exists()
    gets = server.gets("dev_bearing.zip")
    assert len(gets) == 2
    assert "range" not in gets[0]
    assert gets[1]["range"] == f"bytes={cut}-"


def test_resume_of_part_left_by_earlier_run_through_redirect(server, tmp_path):
    zdata, _ = dev_zip("valve", 7)
    server.add_record(DEV, {"dev_valve.zip": zdata}, link_style="redirect")
    remote = _remote(server, DEV, "dev_valve.zip")
    assert remote.url.endswith(f"/records/{DEV}/files/dev_valve.zip")
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "dev_valve.zip.part").write_bytes(zdata[:1000])  # what an earlier, killed run kept
    out = download_file(remote, dest, progress=False, backoff=0)
    assert out.read_bytes() == zdata
    gets = server.gets("dev_valve.zip")
    assert [g.get("range") for g in gets] == ["bytes=1000-"]  # Range survived the 302


def test_server_ignoring_range_restarts_cleanly(server, dev_record, tmp_path):
    path = server.content_path(DEV, "dev_fan.zip")
    data = server.content[path]
    server.cuts[path] = [len(data) // 2]
    server.ignore_range.add(path)
    remote = _remote(server, DEV, "dev_fan.zip")
    out = download_file(remote, tmp_path, progress=False, chunk_size=1024, backoff=0)
    assert out.read_bytes() == data
    gets = server.gets("dev_fan.zip")
    assert len(gets) == 2 and gets[1]["range"] == f"bytes={len(data) // 2}-"  # asked, got 200


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    zdata, _ = dev_zip("gearbox", 3)
    wrong = "0" * 32
    server.add_record(DEV, {"dev_gearbox.zip": zdata}, md5_override={"dev_gearbox.zip": wrong})
    remote = _remote(server, DEV, "dev_gearbox.zip")
    with pytest.raises(DownloadError) as err:
        download_file(remote, tmp_path, progress=False, backoff=0)
    msg = str(err.value)
    assert "dev_gearbox.zip" in msg and wrong in msg and hashlib.md5(zdata).hexdigest() in msg
    assert "\n" not in msg
    assert not (tmp_path / "dev_gearbox.zip").exists()
    assert not (tmp_path / "dev_gearbox.zip.part").exists()


@pytest.mark.parametrize("stale", ["other_version_prefix", "longer_than_file"])
def test_stale_part_is_refetched(server, tmp_path, stale):
    zdata, _ = dev_zip("slider", 11)
    server.add_record(DEV, {"dev_slider.zip": zdata})
    remote = _remote(server, DEV, "dev_slider.zip")
    n = 500 if stale == "other_version_prefix" else len(zdata) + 10
    (tmp_path / "dev_slider.zip.part").write_bytes(b"\xff" * n)
    out = download_file(remote, tmp_path, progress=False, backoff=0)
    assert out.read_bytes() == zdata
    expected = ["bytes=500-", None] if stale == "other_version_prefix" else [None]
    assert [g.get("range") for g in server.gets("dev_slider.zip")] == expected


def test_retries_exhausted_keeps_partial_bytes(server, dev_record, tmp_path):
    path = server.content_path(DEV, "dev_fan.zip")
    server.cuts[path] = [100, 100, 100, 100]  # every request dies after 100 more bytes
    remote = _remote(server, DEV, "dev_fan.zip")
    with pytest.raises(DownloadError) as err:
        download_file(remote, tmp_path, progress=False, chunk_size=64, retries=2, backoff=0)
    assert "dev_fan.zip" in str(err.value) and "3 attempt" in str(err.value)
    part = tmp_path / "dev_fan.zip.part"
    assert part.read_bytes() == server.content[path][:300]  # nothing already downloaded is lost
    assert not (tmp_path / "dev_fan.zip").exists()
    assert [g.get("range") for g in server.gets("dev_fan.zip")] == [None, "bytes=100-", "bytes=200-"]


def test_http_404_for_archive_is_not_retried(server, tmp_path):
    remote = RemoteFile("dev_pump.zip", 10, None, server.url + "/nope/dev_pump.zip")
    with pytest.raises(DownloadError) as err:
        download_file(remote, tmp_path, progress=False, backoff=0)
    assert "dev_pump.zip" in str(err.value) and "404" in str(err.value)
    assert sum(p == "/nope/dev_pump.zip" for p, _ in server.requests) == 1


# --------------------------------------------------------------------------------------
# unpack_archive
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["../evil.wav", "bearing/../../evil.wav", "/tmp/evil.wav"])
def test_zip_slip_member_refused_and_nothing_written(tmp_path, evil):
    zpath = tmp_path / "dev_bearing.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("bearing/train/section_00_source_train_normal_0000_vel_6_loc_A.wav", wav_bytes(1))
        zf.writestr(zipfile.ZipInfo(evil), b"owned")
    zpath.write_bytes(buf.getvalue())
    dest = tmp_path / "work" / "raw"
    with pytest.raises(DownloadError) as err:
        unpack_archive(zpath, dest)
    assert str(zpath) in str(err.value) and "zip-slip" in str(err.value)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil.wav"))
    assert not Path("/tmp/evil.wav").exists() or Path("/tmp/evil.wav").read_bytes() != b"owned"


def test_corrupt_member_leaves_no_half_tree_and_keeps_existing(tmp_path):
    # an existing machine folder (e.g. train from the additional-training zip) must survive
    dest = tmp_path / "raw"
    (dest / "AutoTrash" / "train").mkdir(parents=True)
    (dest / "AutoTrash" / "train" / "a.wav").write_bytes(b"keep")
    members = {n: wav_bytes(i) for i, n in enumerate(dcase_names("AutoTrash", "test", 3))}
    raw = bytearray(make_zip(members, zipfile.ZIP_STORED))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        last = zf.infolist()[-1]
    data_start = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra)
    raw[data_start + 200] ^= 0xFF  # flip a byte inside the last member: CRC error on extract
    zpath = tmp_path / "eval_data_AutoTrash_test.zip"
    zpath.write_bytes(bytes(raw))
    with pytest.raises(DownloadError) as err:
        unpack_archive(zpath, dest)
    assert "eval_data_AutoTrash_test.zip" in str(err.value)
    assert rel_files(dest) == {"AutoTrash/train/a.wav"}
    assert sorted(p.name for p in dest.iterdir()) == ["AutoTrash"]  # no temp folder left


def test_unpack_merges_and_wraps_missing_machine_folder(tmp_path):
    dest = tmp_path / "raw"
    stale = dest / ".unpack-old-run"
    stale.mkdir(parents=True)  # left by a killed unpack
    (stale / "junk").write_bytes(b"x")
    z1 = tmp_path / "a.zip"
    z1.write_bytes(make_zip({n: b"t" for n in dcase_names("ToyPet", "train")}))
    z2 = tmp_path / "b.zip"  # no machine folder at top level
    z2.write_bytes(make_zip({n.split("/", 1)[1]: b"s" for n in dcase_names("ToyPet", "test")}))
    assert unpack_archive(z1, dest) == [dest / "ToyPet"]
    assert unpack_archive(z2, dest, machine="ToyPet") == [dest / "ToyPet"]
    assert rel_files(dest) == set(dcase_names("ToyPet", "train")) | set(dcase_names("ToyPet", "test"))


# --------------------------------------------------------------------------------------
# download_dataset
# --------------------------------------------------------------------------------------


def test_full_dev_download_gives_expected_tree(server, dev_record, tmp_path):
    out = tmp_path / "data"
    report = download_dataset("dev", out, base_url=server.url, progress=False)
    raw = out / "dev_data" / "raw"
    expected = {n for members in dev_record.values() for n in members}
    assert rel_files(raw) == expected
    wav = raw / "bearing" / "train" / "section_00_source_train_normal_0001_vel_6_loc_A.wav"
    samples, sr = sf.read(wav)
    assert sr == SR and len(samples) == 800
    assert wav.read_bytes() == dev_record["dev_bearing.zip"]["bearing/train/section_00_source_train_normal_0001_vel_6_loc_A.wav"]
    assert sorted(report.downloaded) == ["dev_bearing.zip", "dev_fan.zip"]
    assert report.skipped == [] and report.ignored == ["README.md"]
    assert sorted(report.unpacked) == [raw / "bearing", raw / "fan"]
    archives = out / "archives" / "dev"
    assert sorted(p.name for p in archives.iterdir()) == ["dev_bearing.zip.done", "dev_fan.zip.done"]
    marker = json.loads((archives / "dev_bearing.zip.done").read_text())
    assert marker["md5"] == hashlib.md5(server.content[server.content_path(DEV, "dev_bearing.zip")]).hexdigest()
    assert "bearing/train" in marker["folders"]
    assert "/readme" not in [p for p, _ in server.requests]  # non-zip files are not fetched
    summary = report.summary()
    assert "dev_bearing.zip" in summary and "downloaded 2, skipped 0" in summary


def test_rerun_skips_completed_archives_without_get(server, dev_record, tmp_path):
    out = tmp_path / "data"
    download_dataset("dev", out, base_url=server.url, progress=False)
    n_archive_gets = len(server.archive_requests())
    assert n_archive_gets == 2
    report = download_dataset("dev", out, base_url=server.url, progress=False)
    assert len(server.archive_requests()) == n_archive_gets  # no second GET of any archive
    assert sorted(report.skipped) == ["dev_bearing.zip", "dev_fan.zip"] and report.downloaded == []
    # a deleted split folder invalidates its marker: only that archive is fetched again
    shutil.rmtree(out / "dev_data" / "raw" / "fan" / "test")
    report = download_dataset("dev", out, base_url=server.url, progress=False)
    assert report.downloaded == ["dev_fan.zip"] and report.skipped == ["dev_bearing.zip"]
    assert (out / "dev_data" / "raw" / "fan" / "test").is_dir()


def test_keep_archives_and_unpack_after_interrupted_unpack_needs_no_get(server, dev_record, tmp_path):
    out = tmp_path / "data"
    download_dataset("dev", out, machines=["fan"], base_url=server.url, keep_archives=True, progress=False)
    archives = out / "archives" / "dev"
    assert (archives / "dev_fan.zip").read_bytes() == server.content[server.content_path(DEV, "dev_fan.zip")]
    # simulate a run killed between download and marker: marker gone, tree gone, zip kept
    (archives / "dev_fan.zip.done").unlink()
    shutil.rmtree(out / "dev_data" / "raw" / "fan")
    report = download_dataset("dev", out, machines=["fan"], base_url=server.url, keep_archives=True, progress=False)
    assert len(server.gets("dev_fan.zip")) == 1  # verified local zip reused
    assert report.downloaded == [] and report.unpacked == [out / "dev_data" / "raw" / "fan"]
    assert rel_files(out / "dev_data" / "raw") == set(dev_record["dev_fan.zip"])


def test_machines_filter(server, dev_record, tmp_path):
    out = tmp_path / "data"
    report = download_dataset("dev", out, machines=["BEARING"], base_url=server.url, progress=False)
    assert [f.name for f in report.planned] == ["dev_bearing.zip"]
    assert server.gets("dev_fan.zip") == [] and len(server.gets("dev_bearing.zip")) == 1
    assert sorted(p.name for p in (out / "dev_data" / "raw").iterdir()) == ["bearing"]
    with pytest.raises(DownloadError) as err:
        download_dataset("dev", tmp_path / "other", machines=["pump"], base_url=server.url, progress=False)
    assert "pump" in str(err.value) and "bearing" in str(err.value) and "fan" in str(err.value)
    assert not (tmp_path / "other").exists()


def test_dry_run_lists_and_writes_nothing(server, dev_record, tmp_path):
    out = tmp_path / "data"
    report = download_dataset("dev", out, base_url=server.url, dry_run=True, progress=False)
    sizes = {n: len(server.content[server.content_path(DEV, n)]) for n in dev_record}
    assert {f.name: f.size for f in report.planned} == sizes
    assert not out.exists()
    assert server.archive_requests() == []
    summary = report.summary()
    assert "dry run" in summary
    for name, size in sizes.items():
        assert re.search(rf"{re.escape(name)}\s+{re.escape(dl._human(size))}", summary)


def test_additional_and_eval_merge_into_one_machine_folder(server, tmp_path):
    train = {n: wav_bytes(i) for i, n in enumerate(dcase_names("AutoTrash", "train") + dcase_names("AutoTrash", "supplemental", 1))}
    test = {n: wav_bytes(50 + i) for i, n in enumerate(dcase_names("AutoTrash", "test"))}
    other = {n: wav_bytes(90 + i) for i, n in enumerate(dcase_names("ToyRCCar", "train"))}
    server.add_record(ADD, {"eval_data_AutoTrash_train.zip": make_zip(train),
                            "eval_data_ToyRCCar_train.zip": make_zip(other)})
    server.add_record(EVAL, {"eval_data_AutoTrash_test.zip": make_zip(test)})
    out = tmp_path / "data"
    download_dataset("additional", out, machines=["AutoTrash"], base_url=server.url, progress=False)
    download_dataset("eval", out, base_url=server.url, progress=False)
    raw = out / "eval_data" / "raw"
    assert rel_files(raw) == set(train) | set(test)
    assert sorted(p.name for p in (raw / "AutoTrash").iterdir()) == ["supplemental", "test", "train"]
    # each record's marker checks its own sub-folders: re-running both fetches nothing
    n = len(server.archive_requests())
    assert download_dataset("additional", out, machines=["AutoTrash"], base_url=server.url, progress=False).skipped
    assert download_dataset("eval", out, base_url=server.url, progress=False).skipped
    assert len(server.archive_requests()) == n


def test_not_a_zip_with_right_checksum_raises_and_leaves_no_tree(server, tmp_path):
    server.add_record(DEV, {"dev_bearing.zip": b"this is not a zip archive\n" * 50})
    out = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        download_dataset("dev", out, base_url=server.url, progress=False)
    assert "dev_bearing.zip" in str(err.value) and "zip" in str(err.value)
    assert "\n" not in str(err.value)
    raw = out / "dev_data" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []
    assert not (out / "archives" / "dev" / "dev_bearing.zip.done").exists()


def test_not_enough_disk_space_fails_before_any_archive_get(server, dev_record, tmp_path, monkeypatch):
    real = dl.shutil.disk_usage
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: real(p)._replace(free=100))
    with pytest.raises(DownloadError) as err:
        download_dataset("dev", tmp_path / "data", base_url=server.url, progress=False)
    assert "disk space" in str(err.value) and str(tmp_path / "data") in str(err.value)
    assert server.archive_requests() == []


def test_unknown_part_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match="dev, additional, eval"):
        download_dataset("train", tmp_path, base_url="http://127.0.0.1:9", progress=False)


def test_cli_entry_point(server, dev_record, tmp_path, capsys):
    out = tmp_path / "data"
    from bohb_search.cli import main as cli_main

    rc = cli_main(["data", "download", "--what", "dev", "--out", str(out), "--machines", "fan", "--dry-run", "--base-url", server.url])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "dev_fan.zip" in printed and "dev_bearing.zip" not in printed and not out.exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    rc = cli_main(["data", "download", "--what", "eval", "--out", str(out), "--base-url", dead, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and dead in err
