"""Integrity of stores (issue 14, classes 1–4, 9 and 11): identity of temporary folders, validation
before the rename, exclusive locks, per-part checksums, damaged stores, API edges. On copies of real
PTB-XL records."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from clinseq.cli import main
from clinseq.errors import SourceError, StoreError
from clinseq.io import PTBXLSource, convert
from clinseq.timeline import TimelineStore
from clinseq.timeline.lock import FolderLock, LockHeldError
from clinseq.timeline.writer import StoreWriter

PART = 24_000  # one 12 × 1000 int16 ECG per part


def _fail_at(monkeypatch, key):
    load = PTBXLSource.load

    def failing(self, item):
        if item.key == key:
            raise SourceError(item.path, "simulated failure")
        return load(self, item)

    monkeypatch.setattr(PTBXLSource, "load", failing)


def _interrupted(src: Path, out: Path, monkeypatch, rate: int = 100) -> Path:
    """A conversion that stopped at its 4th record, leaving its temporary folder."""
    items = PTBXLSource(src, rate).index()
    with monkeypatch.context() as patch, pytest.raises(SourceError, match="simulated"):
        _fail_at(patch, items[3].key)
        convert(PTBXLSource(src, rate), out, part_max_bytes=PART, progress=False)
    (tmp,) = out.parent.glob(f"{out.name}.tmp-*")
    return tmp


# -- 1. a temporary folder is adopted only by the conversion that made it -------------------------------
def test_leftover_of_another_source_is_not_adopted(mini_ptbxl, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _interrupted(mini_ptbxl, out, monkeypatch)
    other = tmp_path / "other"
    shutil.copytree(mini_ptbxl, other)
    lines = (other / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    (other / "ptbxl_database.csv").write_text("".join(lines[:1] + lines[3:]))  # source B: 4 records
    with pytest.warns(UserWarning, match="made by another conversion"):
        store = TimelineStore.open(convert(PTBXLSource(other, 100), out, part_max_bytes=PART, progress=False))
    assert "resumed_from" not in store.manifest
    assert store.manifest["source"] == str(other)
    assert sorted(store.recordings["source"]) == sorted(i.key for i in PTBXLSource(other, 100).index())


def test_leftover_with_other_options_or_changed_files_is_not_adopted(mini_ptbxl, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _interrupted(mini_ptbxl, out, monkeypatch)
    # another part size changes the output: start clean
    with pytest.warns(UserWarning, match="made by another conversion"):
        convert(PTBXLSource(mini_ptbxl, 100), out, part_max_bytes=2 * PART, progress=False)
    shutil.rmtree(out)
    # a source file changed since (its mtime/size): start clean
    tmp = _interrupted(mini_ptbxl, out, monkeypatch)
    first = PTBXLSource(mini_ptbxl, 100).index()[0].path.with_suffix(".dat")
    os.utime(first, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.warns(UserWarning, match="made by another conversion"):
        store = TimelineStore.open(
            convert(PTBXLSource(mini_ptbxl, 100), out, part_max_bytes=PART, progress=False)
        )
    assert "resumed_from" not in store.manifest
    assert not tmp.exists()


def test_the_same_conversion_resumes(mini_ptbxl, tmp_path, monkeypatch):
    out = tmp_path / "out"
    tmp = _interrupted(mini_ptbxl, out, monkeypatch)
    store = TimelineStore.open(
        convert(PTBXLSource(mini_ptbxl, 100), out, part_max_bytes=PART, progress=False)
    )
    assert store.manifest["resumed_from"] == tmp.name
    assert store.recordings.height == 6


# -- 2. an invalid store is never renamed into place ----------------------------------------------------
def test_duplicated_ecg_id_names_the_csv_rows(mini_ptbxl, tmp_path):
    csv = mini_ptbxl / "ptbxl_database.csv"
    lines = csv.read_text().splitlines(keepends=True)
    ecg_id = lines[1].split(",")[0]
    lines[3] = ecg_id + lines[3][len(lines[3].split(",")[0]) :]
    csv.write_text("".join(lines))
    with pytest.raises(
        SourceError, match=rf"ptbxl_database\.csv: line 4: ecg_id {ecg_id} again \(first on line 2\)"
    ):
        convert(PTBXLSource(mini_ptbxl, 100), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_writer_validates_before_the_rename(mini_ptbxl, tmp_path):
    src = PTBXLSource(mini_ptbxl, 100)
    items = src.index()
    a, b = src.load(items[0]), src.load(items[1])
    b.recording_id = a.recording_id  # a source bug: two recordings, one id
    writer = StoreWriter(tmp_path / "out", dataset="ptbxl", source=mini_ptbxl)
    writer.add(a, key="a")
    writer.add(b, key="b")
    with pytest.raises(
        StoreError, match=rf"recording_id not unique \(\[{a.recording_id}\]\).*{items[1].key}"
    ):
        writer.finish()
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob("out.tmp-*"))  # kept, as the failure left it
    assert not (tmp_path / "out.lock").exists()  # the lock was released


def test_non_finite_calibration_never_reaches_a_store(mini_ptbxl, tmp_path):
    src = PTBXLSource(mini_ptbxl, 100)
    rec = src.load(src.index()[0])
    rec.gain = [float("nan")] + list(rec.gain[1:])
    with StoreWriter(tmp_path / "out", dataset="ptbxl", source=mini_ptbxl) as writer:
        writer.add(rec, key="a")
        with pytest.raises(StoreError, match="gain not finite and non-zero: recording_id="):
            writer.finish()


# -- 3. exclusive lock on a store target --------------------------------------------------------------
HOLD = textwrap.dedent(
    """
    import sys, time
    from clinseq.timeline.lock import FolderLock
    lock = FolderLock(sys.argv[1], "test").acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_second_conversion_fails_at_once_naming_the_holder(mini_ptbxl, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "out.lock")], stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        t0 = time.perf_counter()
        with pytest.raises(
            LockHeldError, match=rf"store target {out} is being written by pid {holder.pid} on host"
        ):
            convert(PTBXLSource(mini_ptbxl, 100), out, progress=False)
        assert time.perf_counter() - t0 < 5
    finally:
        holder.kill()
        holder.wait()
    # the holder died (SIGKILL): its lock file is left, and the next conversion reclaims it
    assert (tmp_path / "out.lock").exists()
    convert(PTBXLSource(mini_ptbxl, 100), out, progress=False)
    assert not (tmp_path / "out.lock").exists()


def test_lock_excl_fallback_reclaims_a_dead_holder(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "x.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = FolderLock(path, "x").acquire()  # the dead holder's file is reclaimed
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
        FolderLock(path, "x").acquire()
    lock.release()
    assert not path.exists()


# -- 4. checksums per part; verify; open checks sizes ----------------------------------------------------
@pytest.fixture
def small_store(mini_ptbxl, tmp_path) -> Path:
    return convert(PTBXLSource(mini_ptbxl, 100), tmp_path / "store", part_max_bytes=2 * PART, progress=False)


def test_checksums_are_those_of_the_bytes_written(small_store):
    import hashlib

    files = json.loads((small_store / "manifest.json").read_text())["files"]
    parts = sorted(p.relative_to(small_store).as_posix() for p in (small_store / "signals").glob("*.arrow"))
    assert len(parts) == 3 and all(files[p]["sha256"] for p in parts)
    for rel, info in files.items():
        data = (small_store / rel).read_bytes()
        assert info["bytes"] == len(data)
        if "sha256" in info:
            assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert TimelineStore.open(small_store).verify() == []
    assert main(["verify", str(small_store)]) == 0


def test_zeroed_bytes_are_found_by_verify(small_store, capsys):
    part = small_store / "signals" / "part-00001.arrow"
    data = bytearray(part.read_bytes())
    data[1000:5096] = bytes(4096)
    part.write_bytes(bytes(data))
    store = TimelineStore.open(small_store)  # same size: open's cheap check cannot see it
    (problem,) = store.verify()
    assert "part-00001.arrow: checksum mismatch" in problem
    assert main(["verify", str(small_store)]) == 2
    assert "clinseq: error:" in capsys.readouterr().err


def test_open_checks_sizes(small_store):
    part = small_store / "signals" / "part-00002.arrow"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(StoreError, match=r"part-00002\.arrow: \d+ bytes, the manifest recorded"):
        TimelineStore.open(small_store)


# -- 9. damaged stores and full disks are errors, not tracebacks --------------------------------------------
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: (s / "manifest.json").write_text("{not json"), "unreadable manifest"),
        (lambda s: (s / "manifest.json").write_bytes(b"\xff\xfe\x00"), "unreadable manifest"),
        (lambda s: (s / "recordings.parquet").unlink(), r"recordings\.parquet: missing"),
    ],
)
def test_damaged_store_is_a_clean_error(small_store, capsys, damage, message):
    damage(small_store)
    assert main(["info", str(small_store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clinseq: error:") and "Traceback" not in err
    assert __import__("re").search(message, err)


def test_full_disk_names_the_resumable_folder(mini_ptbxl, tmp_path, monkeypatch, capsys):
    from clinseq.timeline import writer as writer_module

    real = writer_module._HashingFile.write
    calls = {"n": 0}

    def full(self, data):
        calls["n"] += 1
        if calls["n"] > 12:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(writer_module._HashingFile, "write", full)
        rc = main(["convert", "ptbxl", str(mini_ptbxl), str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err
    (tmp,) = tmp_path.glob("out.tmp-*")
    assert str(tmp) in err and "run the same command again to resume" in err
    assert main(["convert", "ptbxl", str(mini_ptbxl), str(out), "--quiet"]) == 0  # space freed: resumes
    assert TimelineStore.open(out).recordings.height == 6


# -- 11. API edges --------------------------------------------------------------------------------------
def test_read_window_rejects_non_integer_ids_and_bad_channels(small_store):
    store = TimelineStore.open(small_store)
    rid = int(store.recordings["recording_id"][0])
    with pytest.raises(TypeError, match="recording_id must be an integer, got 1.7"):
        store.read_window(1.7, 0, 10)
    with pytest.raises(TypeError, match="must be an integer"):
        store.read_window(str(rid), 0, 10)
    assert store.read_window(np.int64(rid), 0, 10).shape == (12, 10)
    with pytest.raises(
        StoreError, match=r"channels \[12\] are not channel indices of recording .* 12 channels"
    ):
        store.read_window(rid, 0, 10, channels=[0, 12])
    with pytest.raises(StoreError, match=r"channels \[-13\]"):
        store.read_window(rid, 0, 10, channels=np.array([0, -13]))
    assert store.read_window(rid, 0, 10, channels=np.array([11, 0])).shape == (2, 10)
    with pytest.raises(StoreError, match=r"channels \[1.5\]"):
        store.read_window(rid, 0, 10, channels=[1.5])
    assert store.read_window(rid, 0, 10, channels=[-1]).shape == (1, 10)
