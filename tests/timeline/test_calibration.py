"""The float32 calibration path gives exactly the bits of the float64 rule wherever it is taken."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinseq.timeline.calibration import MAX_BASELINE_FLOAT32, exact_in_float32, to_physical


def _float64_rule(adc: np.ndarray, baseline: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The store's rule written out: (adc - baseline) / gain in float64, rounded once to float32."""
    return ((adc.astype(np.float64) - baseline[:, None]) / gain[:, None]).astype(np.float32)


def _real_gains(*roots: Path) -> np.ndarray:
    """Every channel gain of the real WFDB headers (read by wfdb itself), float32-exact or not."""
    import wfdb

    gains = []
    for root in roots:
        for header in sorted(root.rglob("*.hea")):
            try:
                record = wfdb.rdheader(str(header.with_suffix("")))
            except Exception:  # noqa: BLE001 (multi-segment layouts and odd headers: not a gain source)
                continue
            gains += [g for g in (getattr(record, "adc_gain", None) or []) if g]  # a multi-segment has none
    return np.unique(np.array(gains, np.float64))


def test_every_int16_value_gives_the_float64_bits(wfdb_samples_root, wfdb_formats_root, ptbxl_root) -> None:
    adc = np.arange(-(2**15), 2**15, dtype=np.int16)[None, :]  # every int16 ADC value
    real = _real_gains(wfdb_samples_root, wfdb_formats_root, ptbxl_root / "records100" / "00000")
    rng = np.random.default_rng(0)
    # float32-exact gains over a wide range, beside the real ones that are float32-exact (PTB-XL's 1000).
    drawn = rng.uniform(1e-3, 1e5, 40).astype(np.float32).astype(np.float64)
    gains = np.concatenate([real[real.astype(np.float32) == real], drawn, [1.0, 200.0, 1000.0, 2000.0]])
    baselines = np.concatenate([[0.0, 1024.0, -2048.0, MAX_BASELINE_FLOAT32, -MAX_BASELINE_FLOAT32],
                                rng.integers(-(2**23), 2**23, 6).astype(np.float64)])  # fmt: skip
    assert len(real) and (real == 1000.0).any(), "the real headers give PTB-XL's gain"
    checked = 0
    for gain in gains:
        for baseline in baselines:
            g, b = np.array([gain]), np.array([baseline])
            assert exact_in_float32(g, b, "int16")
            fast = to_physical(adc, b, g, exact32=True)
            assert fast.dtype == np.float32
            np.testing.assert_array_equal(fast.view(np.uint32), _float64_rule(adc, b, g).view(np.uint32))
            checked += adc.size
    assert checked > 20_000_000


def test_the_float32_path_is_refused_where_it_could_differ() -> None:
    one = np.array([1.0])
    assert not exact_in_float32(np.array([0.1]), np.array([0.0]), "int16")  # 0.1 is not a float32
    assert not exact_in_float32(one * 1000, np.array([0.5]), "int16")  # baseline not an integer
    assert not exact_in_float32(one * 1000, np.array([2.0**23 + 1]), "int16")  # adc - baseline may reach 2^24
    assert not exact_in_float32(one * 1000, np.array([0.0]), "int32")  # 32-bit ADC values are not float32
    assert not exact_in_float32(np.array([np.inf]), np.array([0.0]), "int16")
    assert not exact_in_float32(np.array([2.0]), np.array([0.0]), "float32")  # only the identity for floats
    assert exact_in_float32(one, np.array([0.0]), "float32")
    assert not exact_in_float32(np.array([1000.0, 0.1]), np.array([0.0, 0.0]), "int16")  # every channel


def test_the_float64_path_where_float32_is_refused() -> None:
    # A gain that is not a float32 and a 32-bit ADC value: float32 arithmetic would differ, the rule not.
    adc = np.array([[2**30 + 3, -(2**29) - 1, 12345]], dtype=np.int32)
    g, b = np.array([0.1]), np.array([7.0])
    out = to_physical(adc, b, g, exact32=False)
    np.testing.assert_array_equal(out.view(np.uint32), _float64_rule(adc, b, g).view(np.uint32))


def test_store_reads_and_loader_batches_keep_the_float64_bits(ptbxl_store) -> None:
    """Real PTB-XL windows (float32 path: gain 1000, baseline 0) through read_window and WindowDataset."""
    import torch

    from clinseq.data.datasets import WindowDataset

    rec = ptbxl_store.recordings
    assert all(
        exact_in_float32(g, b, d)
        for g, b, d in zip(rec["gain"], rec["baseline"], rec["sample_dtype"], strict=True)
    )
    for rid in rec["recording_id"].head(20).to_list():
        adc = ptbxl_store.read_window(rid, 100, 500, units="adc")
        row = rec.filter(rec["recording_id"] == rid)
        g, b = np.asarray(row["gain"][0], np.float64), np.asarray(row["baseline"][0], np.float64)
        physical = ptbxl_store.read_window(rid, 100, 500)
        np.testing.assert_array_equal(physical.view(np.uint32), _float64_rule(adc, b, g).view(np.uint32))
    physical_ds = WindowDataset(ptbxl_store, window_s=5.0)
    adc_ds = WindowDataset(ptbxl_store, window_s=5.0, units="adc")
    keys = [(int(rid), 7 * i) for i, rid in enumerate(rec["recording_id"].head(16).to_list())]
    got = physical_ds.fetch(keys)
    raw = adc_ds.fetch(keys)
    want = ((raw["x"].to(torch.float64) - raw["baseline"][..., None]) / raw["gain"][..., None]).to(
        torch.float32
    )
    assert torch.equal(got["x"].view(torch.int32), want.view(torch.int32))
