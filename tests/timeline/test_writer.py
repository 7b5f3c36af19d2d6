"""Resume: a conversion that stops midway and runs again gives the same store as one that did not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clinseq.errors import SourceError, StoreError
from clinseq.io import PTBXLSource, convert
from clinseq.timeline import TimelineStore

PART_BYTES = 48_000  # two 12 × 1000 int16 ECGs per part: many parts, so resume has work to skip


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = TimelineStore.open(a), TimelineStore.open(b)
    assert sa.recordings.equals(sb.recordings)
    assert sa.patients.equals(sb.patients)
    parts_a = sorted(p.name for p in (a / "signals").iterdir())
    assert parts_a == sorted(p.name for p in (b / "signals").iterdir())
    for name in parts_a:
        assert (a / "signals" / name).read_bytes() == (b / "signals" / name).read_bytes(), name
    ma, mb = (json.loads((s / "manifest.json").read_text()) for s in (a, b))
    for m in (ma, mb):
        m.pop("created_at"), m.pop("resumed_from", None)
    assert ma == mb


def fail_at(monkeypatch, fail_key):
    """PTB-XL fails on one record, like a run that dies there (the same source and options, so the
    next conversion is the same conversion and resumes)."""
    load = PTBXLSource.load

    def failing(self, item):
        if item.key == fail_key:
            raise SourceError(item.path, "simulated failure")
        return load(self, item)

    monkeypatch.setattr(PTBXLSource, "load", failing)


@pytest.fixture(scope="module")
def reference_store(ptbxl_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "store"
    return convert(PTBXLSource(ptbxl_root, 100), out, part_max_bytes=PART_BYTES, progress=False, workers=2)


def test_resume_after_an_error_equals_uninterrupted(ptbxl_root, tmp_path, reference_store, monkeypatch):
    items = PTBXLSource(ptbxl_root, 100).index()
    out = tmp_path / "store"
    with monkeypatch.context() as patch, pytest.raises(SourceError, match="simulated failure"):
        fail_at(patch, items[157].key)
        convert(PTBXLSource(ptbxl_root, 100), out, part_max_bytes=PART_BYTES, progress=False)
    (tmp,) = tmp_path.glob("store.tmp-*")
    commits = sorted((tmp / "signals").glob("*.commit.json"))
    assert len(commits) == 78  # 157 records done, two per part: 78 parts committed, one open
    convert(PTBXLSource(ptbxl_root, 100), out, part_max_bytes=PART_BYTES, progress=False)
    assert not list(tmp_path.glob("store.tmp-*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from"] == tmp.name
    assert_same_store(out, reference_store)


SLOW_CONVERT = textwrap.dedent(
    """
    import sys, time
    from clinseq.io import PTBXLSource, convert

    load = PTBXLSource.load

    def slow(self, item):
        time.sleep(0.02)
        return load(self, item)

    PTBXLSource.load = slow
    convert(PTBXLSource(sys.argv[1], 100), sys.argv[2], part_max_bytes=int(sys.argv[3]), progress=False)
    """
)


def test_resume_after_sigkill_equals_uninterrupted(ptbxl_root, tmp_path, reference_store):
    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT, str(ptbxl_root), str(out), str(PART_BYTES)])
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("store.tmp-*/signals/part-00020.commit.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (tmp,) = tmp_path.glob("store.tmp-*")
    assert not out.exists()
    n_done = len(list((tmp / "signals").glob("*.commit.json")))
    assert 20 < n_done < 200
    with pytest.raises(StoreError, match="unfinished conversion"):
        TimelineStore.open(out)
    convert(PTBXLSource(ptbxl_root, 100), out, part_max_bytes=PART_BYTES, progress=False)
    assert json.loads((out / "manifest.json").read_text())["resumed_from"] == tmp.name
    assert_same_store(out, reference_store)


def test_existing_store_is_never_overwritten(reference_store, ptbxl_root):
    with pytest.raises(StoreError, match="already exists"):
        convert(PTBXLSource(ptbxl_root, 100), reference_store, progress=False)


def test_corrupt_committed_part_is_rewritten(ptbxl_root, tmp_path, reference_store, monkeypatch):
    items = PTBXLSource(ptbxl_root, 100).index()
    out = tmp_path / "store"
    with monkeypatch.context() as patch, pytest.raises(SourceError):
        fail_at(patch, items[41].key)
        convert(PTBXLSource(ptbxl_root, 100), out, part_max_bytes=PART_BYTES, progress=False)
    (tmp,) = tmp_path.glob("store.tmp-*")
    part = tmp / "signals" / "part-00010.arrow"
    part.write_bytes(part.read_bytes()[:1000])  # a torn write the commit file does not vouch for
    with pytest.warns(UserWarning, match="does not check out"):
        convert(PTBXLSource(ptbxl_root, 100), out, part_max_bytes=PART_BYTES, progress=False)
    assert_same_store(out, reference_store)
