"""``clinseq download`` against a local PhysioNet stand-in: Python's http.server on 127.0.0.1, started
here, serving copies of ../shared/data laid out as PhysioNet publishes them (files/<db>/<version>/ with a
SHA256SUMS.txt generated over the copy). No other address is contacted."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import polars as pl
import pytest

from clinseq.cli import main
from clinseq.io.download import PROVENANCE_FILE, AccessError, DownloadError, download
from clinseq.io.physionet import DATASETS, parse_sha256sums
from clinseq.io.sources import SOURCES
from clinseq.timeline import TimelineStore
from clinseq.utils import data_root

N_SERVED = 12  # PTB-XL ECGs on the test server
N_PICKED = 10  # --records


class PhysioNetStandIn:
    """A loopback HTTP server with PhysioNet's layout under ``root``: GET with ``Range: bytes=N-``,
    optional basic auth, ``cut_once`` paths that send half their bytes and close the connection once.
    ``log`` holds ``(path, range header or None, status)`` of every request."""

    def __init__(self, root: Path, auth: tuple[str, str] | None = None) -> None:
        self.root, self.log, self.cut_once = root, [], set()
        expected = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _status(self, rel: str, code: int, rng: str | None) -> None:
                server.log.append((rel, rng, code))
                self.send_response(code)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                rel = unquote(urlsplit(self.path).path).lstrip("/")
                rng = self.headers.get("Range")
                if expected and self.headers.get("Authorization") != expected:
                    self._status(rel, 401, rng)
                    self.send_header("WWW-Authenticate", 'Basic realm="PhysioNet"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = server.root / rel
                if not path.is_file():
                    self._status(rel, 404, rng)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
                if start >= len(data) and rng:
                    self._status(rel, 416, rng)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._status(rel, 206 if rng else 200, rng)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if rel in server.cut_once:
                    server.cut_once.discard(rel)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def requests_for(self, rel_suffix: str) -> list[tuple[str, str | None, int]]:
        return [entry for entry in self.log if entry[0].endswith(rel_suffix)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sums(release: Path) -> None:
    """SHA256SUMS.txt over every file of the release copy (as PhysioNet publishes it)."""
    lines = [
        f"{_sha256(p)} {p.relative_to(release).as_posix()}"
        for p in sorted(release.rglob("*"))
        if p.is_file() and p.name != "SHA256SUMS.txt"
    ]
    (release / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")


def _ptbxl_rows(ptbxl_root: Path, n: int) -> tuple[list[str], list[dict[str, str]]]:
    with (ptbxl_root / "ptbxl_database.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = sorted(reader, key=lambda r: int(r["ecg_id"]))
        return list(reader.fieldnames or []), [r for r in rows if r["filename_hr"]][:n]


def _write_ptbxl(folder: Path, ptbxl_root: Path, n: int, *, link: bool = False) -> None:
    """PTB-XL's layout with the first ``n`` ECGs of the shared subset (records100 and records500)."""
    folder.mkdir(parents=True)
    columns, rows = _ptbxl_rows(ptbxl_root, n)
    with (folder / "ptbxl_database.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for name in ("scp_statements.csv", "LICENSE.txt"):
        shutil.copyfile(ptbxl_root / name, folder / name)
    records = []
    for row in rows:
        for column in ("filename_lr", "filename_hr"):
            records.append(row[column])
            for ext in (".hea", ".dat"):
                target = folder / (row[column] + ext)
                target.parent.mkdir(parents=True, exist_ok=True)
                if link:
                    target.symlink_to(ptbxl_root / (row[column] + ext))
                else:
                    shutil.copyfile(ptbxl_root / (row[column] + ext), target)
    (folder / "RECORDS").write_text("".join(f"{r}\n" for r in sorted(records)))


@pytest.fixture()
def ptbxl_server(tmp_path: Path, ptbxl_root: Path):
    release = tmp_path / "server" / "files" / "ptb-xl" / "1.0.3"
    _write_ptbxl(release, ptbxl_root, N_SERVED)
    write_sums(release)
    server = PhysioNetStandIn(tmp_path / "server")
    yield server, release
    server.close()


def _first(release: Path, pattern: str) -> str:
    return sorted(p.relative_to(release).as_posix() for p in release.glob(pattern))[0]


def test_every_dataset_names_a_convert_source() -> None:
    assert set(DATASETS) == {
        "ptbxl", "mimic-iv-ecg", "eegmat", "eegmmidb", "mimic-iv-demo", "mimic-iv", "mimic-iv-ecg-demo"
    }  # fmt: skip
    for spec in DATASETS.values():
        assert spec.source in SOURCES, spec.name
    assert DATASETS["mimic-iv"].credentialed
    assert not DATASETS["ptbxl"].credentialed


def test_download_then_convert_gives_the_store_of_the_shared_copy(
    tmp_path: Path, ptbxl_server, ptbxl_root: Path, capsys
) -> None:
    server, release = ptbxl_server
    dest = tmp_path / "ptbxl"
    argv = ["download", "ptbxl", str(dest), "--records", str(N_PICKED), "--subset", "records100"]
    rc = main([*argv, "--base-url", server.url, "--workers", "3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    # Partial choice stays consistent: 10 csv rows, their 100 Hz files, no 500 Hz file.
    rows = pl.read_csv(dest / "ptbxl_database.csv")
    assert rows.height == N_PICKED
    for name in rows["filename_lr"]:
        assert (dest / f"{name}.hea").is_file() and (dest / f"{name}.dat").is_file()
    assert not (dest / "records500").exists()
    assert len(list((dest / "records100").rglob("*.dat"))) == N_PICKED
    assert len((dest / "RECORDS").read_text().splitlines()) == N_PICKED
    original = dest / ".clinseq-download" / "originals" / "ptbxl_database.csv"
    assert original.read_bytes() == (release / "ptbxl_database.csv").read_bytes()
    provenance = json.loads((dest / PROVENANCE_FILE).read_text())
    assert provenance["url_root"] == f"{server.url}/files/ptb-xl/1.0.3"
    assert provenance["checksums_verified"] is True and provenance["version"] == "1.0.3"
    assert provenance["units_picked"] == N_PICKED
    sums = parse_sha256sums((release / "SHA256SUMS.txt").read_text())
    for path in (dest / "records100").rglob("*.*"):
        assert _sha256(path) == sums[path.relative_to(dest).as_posix()]

    # Run again: nothing complete is fetched again.
    server.log.clear()
    assert main([*argv, "--base-url", server.url, "--quiet"]) == 0
    assert server.log == []

    # download → convert == converting the same ECGs of the shared copy.
    reference = tmp_path / "reference"
    _write_ptbxl(reference, ptbxl_root, N_PICKED, link=True)
    got = TimelineStore.open(SOURCES["ptbxl"].convert(dest, tmp_path / "got", progress=False))
    want = TimelineStore.open(SOURCES["ptbxl"].convert(reference, tmp_path / "want", progress=False))
    assert got.recordings.equals(want.recordings)
    assert got.patients.equals(want.patients)
    for rid in want.recordings["recording_id"]:
        np.testing.assert_array_equal(got.read_window(rid, 0, 500), want.read_window(rid, 0, 500))
    assert got.manifest["download"]["dataset"] == "ptbxl"
    assert got.manifest["download"]["url_root"] == provenance["url_root"]
    assert got.manifest["download"]["checksums_verified"] is True
    assert want.manifest["download"] is None


def test_a_file_corrupted_on_the_server_is_named_and_not_kept(tmp_path: Path, ptbxl_server, capsys) -> None:
    server, release = ptbxl_server
    bad = _first(release, "records100/*/*.dat")
    data = bytearray((release / bad).read_bytes())
    data[100] ^= 0xFF
    (release / bad).write_bytes(bytes(data))
    dest = tmp_path / "ptbxl"
    rc = main(["download", "ptbxl", str(dest), "--base-url", server.url, "--quiet", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("clinseq: error:") and bad in err and "SHA-256" in err
    assert not (dest / bad).exists() and not (dest / f"{bad}.part").exists()


def test_a_cut_connection_resumes_with_a_range_request(tmp_path: Path, ptbxl_server) -> None:
    server, release = ptbxl_server
    big = _first(release, "records500/*/*.dat")
    size = (release / big).stat().st_size
    dest = tmp_path / "ptbxl"
    # Within one call: the cut transfer is resumed from where it stopped.
    server.cut_once.add(f"files/ptb-xl/1.0.3/{big}")
    download("ptbxl", dest, records=2, base_url=server.url, progress=False, workers=2)
    # The bytes received before the cut were kept (all but the chunk in flight): the retry asks
    # only for the rest.
    (first, second) = server.requests_for(big)
    assert first[1:] == (None, 200) and second[2] == 206
    start = int(second[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= size // 2
    assert (dest / big).read_bytes() == (release / big).read_bytes()

    # Across calls: a run that gives up leaves <file>.part; the next run asks only for the rest.
    dest2 = tmp_path / "ptbxl2"
    server.cut_once.add(f"files/ptb-xl/1.0.3/{big}")
    with pytest.raises(DownloadError, match="connection was lost") as info:
        download("ptbxl", dest2, records=2, base_url=server.url, progress=False, retries=0, workers=1)
    assert info.value.path == big
    kept = (dest2 / f"{big}.part").stat().st_size
    complete = {
        f"files/ptb-xl/1.0.3/{p.relative_to(dest2).as_posix()}"
        for p in dest2.rglob("*")
        if p.is_file() and ".clinseq-download" not in p.parts and p.suffix != ".part"
    }
    assert len(complete) > 3
    assert 0 < kept <= size // 2
    server.log.clear()
    download("ptbxl", dest2, records=2, base_url=server.url, progress=False, retries=0)
    assert server.requests_for(big) == [(f"files/ptb-xl/1.0.3/{big}", f"bytes={kept}-", 206)]
    assert (dest2 / big).read_bytes() == (release / big).read_bytes()
    assert not (dest2 / f"{big}.part").exists()
    # The files completed by the first run were not fetched again.
    fetched_again = {entry[0] for entry in server.log}
    assert fetched_again & complete == set()


def test_a_missing_record_is_reported_or_skipped(tmp_path: Path, ptbxl_server, capsys) -> None:
    server, release = ptbxl_server
    gone = _first(release, "records100/*/*.hea")
    (release / gone).unlink()  # listed in SHA256SUMS.txt, 404 on the server
    rc = main(["download", "ptbxl", str(tmp_path / "a"), "--base-url", server.url, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("clinseq: error:") and gone in err and "404" in err
    dest = tmp_path / "b"
    rc = main(["download", "ptbxl", str(dest), "--base-url", server.url, "--quiet", "--on-error", "skip"])
    out = capsys.readouterr().out
    assert rc == 0 and f"skipped {gone}" in out
    provenance = json.loads((dest / PROVENANCE_FILE).read_text())
    assert [s["path"] for s in provenance["skipped"]] == [gone]
    assert provenance["checksums_verified"] is False
    assert len(list((dest / "records100").rglob("*.hea"))) == N_SERVED - 1


def test_base_url_from_the_environment(tmp_path: Path, ptbxl_server, monkeypatch) -> None:
    server, _ = ptbxl_server
    monkeypatch.setenv("CLINSEQ_PHYSIONET_URL", server.url + "/")
    record = download("ptbxl", tmp_path / "d", records=1, subsets=["records500"], progress=False)
    assert record["url_root"] == f"{server.url}/files/ptb-xl/1.0.3"
    assert len(list((tmp_path / "d").rglob("*.dat"))) == 1


@pytest.fixture()
def credentialed_server(tmp_path: Path):
    """MIMIC-IV's place (files/mimiciv/3.1/) holding a few files of the open demo, behind basic auth."""
    demo = data_root() / "mimic_iv_demo"
    if not demo.is_dir():
        pytest.skip(f"{demo} absent: the MIMIC-IV demo is needed (see README, Data)")
    release = tmp_path / "server" / "files" / "mimiciv" / "3.1"
    for rel in ("LICENSE.txt", "hosp/patients.csv.gz", "hosp/admissions.csv.gz", "icu/icustays.csv.gz"):
        (release / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / rel, release / rel)
    write_sums(release)
    server = PhysioNetStandIn(tmp_path / "server", auth=("ada", "s3cret-pw"))
    yield server, release
    server.close()


def test_credentialed_download_and_a_refused_login(
    tmp_path: Path, credentialed_server, monkeypatch, capsys
) -> None:
    server, release = credentialed_server
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of the machine
    monkeypatch.setenv("PHYSIONET_PASSWORD", "wrong-pw")
    rc = main(
        ["download", "mimic-iv", str(tmp_path / "no"), "--user", "ada", "--base-url", server.url, "--quiet"]
    )
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.startswith("clinseq: error:") and "401" in captured.err
    assert "Credentialed Health Data Use Agreement" in captured.err
    assert "wrong-pw" not in captured.err + captured.out
    with pytest.raises(AccessError):
        download("mimic-iv", tmp_path / "no2", user="ada", base_url=server.url, progress=False)

    monkeypatch.setenv("PHYSIONET_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("PHYSIONET_USER", "ada")
    dest = tmp_path / "mimiciv"
    rc = main(["download", "mimic-iv", str(dest), "--subset", "hosp", "--base-url", server.url, "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (dest / "hosp" / "patients.csv.gz").read_bytes() == (release / "hosp/patients.csv.gz").read_bytes()
    assert not (dest / "icu").exists()
    for path in dest.rglob("*"):
        if path.is_file():
            assert b"s3cret-pw" not in path.read_bytes(), path
    assert "s3cret-pw" not in captured.out + captured.err

    # A ~/.netrc entry for the host gives user and password.
    monkeypatch.delenv("PHYSIONET_PASSWORD")
    monkeypatch.delenv("PHYSIONET_USER")
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login ada password s3cret-pw\n")
    netrc.chmod(0o600)
    download("mimic-iv", tmp_path / "via-netrc", subsets=["icu"], base_url=server.url, progress=False)
    assert (tmp_path / "via-netrc" / "icu" / "icustays.csv.gz").is_file()

    # Without a terminal and without a password: a clear error, no prompt.
    netrc.unlink()
    monkeypatch.setenv("PHYSIONET_USER", "ada")
    rc = main(["download", "mimic-iv", str(tmp_path / "none"), "--base-url", server.url, "--quiet"])
    assert rc == 2 and "PHYSIONET_PASSWORD" in capsys.readouterr().err


def test_eegmat_records_picks_whole_subjects_and_filters_subject_info(
    tmp_path: Path, eegmat_root: Path
) -> None:
    release = tmp_path / "server" / "files" / "eegmat" / "1.0.0"
    release.mkdir(parents=True)
    subjects = sorted({p.name.split("_")[0] for p in eegmat_root.glob("Subject*.edf")})[:3]
    official = parse_sha256sums((eegmat_root / "SHA256SUMS.txt").read_text())
    lines = []
    for name in ("subject-info.csv", "README.txt"):
        shutil.copyfile(eegmat_root / name, release / name)
        lines.append(f"{_sha256(release / name)} {name}")
    for subject in subjects:
        for k in (1, 2):
            name = f"{subject}_{k}.edf"
            shutil.copyfile(eegmat_root / name, release / name)
            lines.append(f"{official[name]} {name}")  # PhysioNet's own checksums of these files
    (release / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    server = PhysioNetStandIn(tmp_path / "server")
    try:
        dest = tmp_path / "eegmat"
        record = download("eegmat", dest, records=2, base_url=server.url, progress=False)
    finally:
        server.close()
    assert sorted(p.name for p in dest.glob("*.edf")) == [
        f"{s}_{k}.edf" for s in subjects[:2] for k in (1, 2)
    ]
    info = pl.read_csv(dest / "subject-info.csv")
    assert info["Subject"].to_list() == subjects[:2]
    assert record["convert"].startswith("clinseq convert eeg ")

    # download → convert == converting the same files of the shared copy.
    reference = tmp_path / "reference"
    reference.mkdir()
    for path in dest.glob("*.edf"):
        (reference / path.name).symlink_to(eegmat_root / path.name)
    (reference / "subject-info.csv").write_bytes((dest / "subject-info.csv").read_bytes())
    got = TimelineStore.open(SOURCES["eeg"].convert(dest, tmp_path / "got", progress=False, layout="eegmat"))
    want = TimelineStore.open(
        SOURCES["eeg"].convert(reference, tmp_path / "want", progress=False, layout="eegmat")
    )
    assert got.recordings.equals(want.recordings)
    assert got.patients.equals(want.patients)
    for rid in want.recordings["recording_id"]:
        np.testing.assert_array_equal(got.read_window(rid, 0, 5000), want.read_window(rid, 0, 5000))
    assert got.manifest["download"]["dataset"] == "eegmat" and got.manifest["download"]["checksums_verified"]
