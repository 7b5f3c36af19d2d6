"""Two runs that need the same missing store: the second waits for the first's conversion and reuses it."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from clinseq.timeline import TimelineStore
from clinseq.timeline.lock import FolderLock
from clinseq.train import load_config, prepare_store


def _ptbxl_config(ptbxl_root: Path, store: Path):
    """A pretraining config whose store (absent) is converted from the real PTB-XL subset at 100 Hz."""
    data = {"source": "ptbxl", "root": str(ptbxl_root), "store": str(store), "sampling_rate_hz": 100}
    return load_config(values={"data": data})


def test_prepare_store_waits_for_the_run_converting_it(ptbxl_root: Path, ptbxl_store, tmp_path, capsys):
    target = tmp_path / "stores" / "ptbxl100"
    config = _ptbxl_config(ptbxl_root, target)
    # "Another run" holds the store target's lock, as StoreWriter does while it converts.
    lock = FolderLock(target.parent / f"{target.name}.lock", f"store target {target}").acquire()
    opened: list[TimelineStore] = []
    waiter = threading.Thread(
        target=lambda: opened.append(prepare_store(config, progress=False, poll_s=0.05))
    )
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not opened, "prepare_store must wait while the store's lock is held"
    # The other run finishes: its store appears whole (written beside, then renamed, as StoreWriter does),
    # then its lock is released.
    shutil.copytree(ptbxl_store.path, tmp_path / "stores" / "ptbxl100.tmp-other")
    (tmp_path / "stores" / "ptbxl100.tmp-other").rename(target)
    lock.release()
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert time.monotonic() - started >= 0.5
    (store,) = opened
    assert store.path == target
    assert store.recordings.height == ptbxl_store.recordings.height
    err = capsys.readouterr().err
    assert "waiting for it and reusing its store" in err and "is ready after waiting" in err


def test_a_store_finished_between_the_check_and_the_conversion_is_reused(
    ptbxl_root: Path, ptbxl_store, tmp_path, monkeypatch
):
    """The other run renames its store into place and releases its lock after this run looked for the
    store and before it started converting: the writer then refuses the existing folder, and the store
    the other run finished is opened instead."""
    from clinseq.errors import StoreError
    from clinseq.train import builders

    target = tmp_path / "stores" / "ptbxl100"
    config = _ptbxl_config(ptbxl_root, target)

    def finished_meanwhile(data, root, out, progress):
        shutil.copytree(ptbxl_store.path, out)
        raise StoreError(f"{out} already exists: remove it or choose another output folder")

    monkeypatch.setattr(builders, "_convert", finished_meanwhile)
    store = prepare_store(config, progress=False, poll_s=0.01)
    assert store.path == target and store.recordings.height == ptbxl_store.recordings.height

    def broken(data, root, out, progress):  # any other store error is not swallowed
        raise StoreError(f"{out}: the source is damaged")

    monkeypatch.setattr(builders, "_convert", broken)
    config.data.store = str(tmp_path / "stores" / "other")
    with pytest.raises(StoreError, match="damaged"):
        prepare_store(config, progress=False, poll_s=0.01)
