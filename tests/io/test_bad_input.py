"""Every bad-input case, made from corrupted copies of real records in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clinseq.errors import SourceError
from clinseq.io import PTBXLSource, convert
from clinseq.timeline import TimelineStore


def make_mini_ptbxl(ptbxl_root: Path, dst: Path, n: int) -> list[str]:
    """A PTB-XL folder with the first ``n`` rows of the real database and their 100 Hz records."""
    dst.mkdir(parents=True)
    lines = (ptbxl_root / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    # rows may span lines (quoted reports): let the csv module split them
    import csv
    import io

    rows = list(csv.reader(io.StringIO("".join(lines))))
    header, body = rows[0], rows[1 : n + 1]
    with (dst / "ptbxl_database.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    shutil.copy(ptbxl_root / "scp_statements.csv", dst)
    col = header.index("filename_lr")
    names = [row[col] for row in body]
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(ptbxl_root / (name + ext), dst / (name + ext))
    return names


@pytest.fixture
def mini(ptbxl_root, tmp_path):
    root = tmp_path / "ptbxl"
    return root, make_mini_ptbxl(ptbxl_root, root, 12)


def _convert(root, out, **kw):
    return convert(PTBXLSource(root, 100), out, progress=False, **kw)


def _rewrite_header(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


CASES = {
    "truncated_dat": (
        lambda p: p.with_suffix(".dat").write_bytes(p.with_suffix(".dat").read_bytes()[:5000]),
        r"\.dat: truncated: the header \(12 signals × 1000 samples in format 16\) implies 24000 bytes, "
        r"the file has 5000",
    ),
    "header_lead_count": (
        # drop the last signal line and say 11 leads: the .dat holds 12 leads' worth
        lambda p: _rewrite_header(
            p.with_suffix(".hea"), lambda ls: [ls[0].replace(" 12 ", " 11 ", 1), *ls[1:-1]]
        ),
        r"\.dat: holds 24000 bytes but the header \(11 signals × 1000 samples in format 16\) implies 22000",
    ),
    "header_length": (
        lambda p: _rewrite_header(
            p.with_suffix(".hea"), lambda ls: [ls[0].replace(" 1000", " 1200"), *ls[1:]]
        ),
        r"\.dat: truncated: the header \(12 signals × 1200 samples",
    ),
    "missing_on_disk": (
        lambda p: (p.with_suffix(".hea").unlink(), p.with_suffix(".dat").unlink()),
        r"\.hea: listed in ptbxl_database\.csv \(ecg_id=\d+\) but missing on disk",
    ),
    "unknown_sampling_rate": (
        lambda p: _rewrite_header(
            p.with_suffix(".hea"), lambda ls: [ls[0].replace(" 100 ", " 0 ", 1), *ls[1:]]
        ),
        r"\.hea: record line: sampling rate '0' is not a finite number > 0",
    ),
    "corrupted_bytes": (
        lambda p: p.with_suffix(".dat").write_bytes(
            p.with_suffix(".dat").read_bytes()[:100] + b"\x7f\x7f" + p.with_suffix(".dat").read_bytes()[102:]
        ),
        r"\.dat: checksum mismatch in signal",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_record_raises_naming_file_and_problem(mini, tmp_path, case):
    root, names = mini
    corrupt, message = CASES[case]
    bad = names[5]
    corrupt(root / bad)
    with pytest.raises(SourceError, match=message) as info:
        _convert(root, tmp_path / "store")
    assert bad.split("/")[-1] in info.value.path
    assert not (tmp_path / "store").exists()  # nothing half-written in place


@pytest.mark.parametrize("case", sorted(CASES))
def test_skip_lists_the_bad_file_and_converts_the_rest(mini, tmp_path, case):
    root, names = mini
    corrupt, message = CASES[case]
    corrupt(root / names[3])
    store = TimelineStore.open(_convert(root, tmp_path / "store", on_error="skip", workers=2))
    assert store.recordings.height == len(names) - 1
    (skipped,) = store.manifest["skipped"]
    assert skipped["key"] == names[3]
    assert pytest.importorskip("re").search(message, f"{skipped['path']}: {skipped['reason']}")


def test_bad_database_csv(mini, tmp_path):
    root, _ = mini
    text = (root / "ptbxl_database.csv").read_text().replace("1984-11-09 09:17:34", "not a date", 1)
    (root / "ptbxl_database.csv").write_text(text)
    with pytest.raises(SourceError, match=r"ptbxl_database\.csv: ptbxl_database\.csv line 2: unparsable"):
        _convert(root, tmp_path / "store")
