"""The tile table: keyed by (architecture, dtype, D), and its GPU tile shapes numerically tested on the CPU.

The interpreted tests elsewhere use the interpreter's small 32×32 tiles. Here the launchers are given
the table's own GPU configurations — BLOCK_M of 128 and 64, the resident-D path (the program's rows in
registers, D ≤ 256), the streamed-D path with a D-block grid axis (fp32 rows, D > 256) — and run under
TRITON_INTERPRET=1 in fp32 at N ≤ 256 against the dense float64 formula. Which architecture a device
maps to (MI300 on ROCm included) is checked with a mocked capability.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clinseq.kernels import HAS_TRITON, grouped_info_nce, naive_grouped_info_nce
from clinseq.kernels import info_nce as gin

from ._grads import assert_grads_close, loss_and_grads

TRITON_RUNS = HAS_TRITON and (torch.cuda.is_available() or gin.INTERPRETED)
needs_triton = pytest.mark.skipif(
    not TRITON_RUNS, reason="Triton needs CUDA, or TRITON_INTERPRET=1 before clinseq.kernels is imported"
)
KINDS = ("fwd", "dq", "dk")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("generation", gin.GENERATIONS)
@pytest.mark.parametrize("dim", [1, 16, 100, 128, 129, 256, 300, 512, 1024])
def test_every_architecture_dtype_and_dim_has_a_configuration(generation: str, dim: int) -> None:
    for dtype in DTYPES:
        for kind in KINDS:
            cfg = gin.table_config(generation, kind, dim, dtype)
            assert cfg.block_d >= 16 and cfg.block_do >= 16
            if cfg.resident:
                assert cfg.block_d >= dim, (generation, kind, dim, dtype, cfg)
            else:
                assert cfg.block_d < dim and cfg.block_do <= 128, (generation, kind, dim, dtype, cfg)


def test_fp32_has_its_own_rows() -> None:
    """fp32 operands are twice the size and, at IEEE precision, multiply on CUDA cores: fp32 streams D in
    32-wide chunks where the 2-byte dtypes keep 256-wide rows resident (issue 20: fp32 took the bf16
    rows and spilled, or needed 107 KB of shared memory on sm_86/89)."""
    for generation in gin.GENERATIONS:
        for kind in KINDS:
            fp32 = gin.table_config(generation, kind, 256, torch.float32)
            assert not fp32.resident and fp32.block_d == 32
            assert gin.table_config(generation, kind, 256, torch.bfloat16) == gin.table_config(
                generation, kind, 256, torch.float16
            )
    assert gin.table_config("sm90", "fwd", 256, torch.bfloat16).resident


def test_sm90_passes_own_at_least_64_rows() -> None:
    """Triton lowers a dot to Hopper's wgmma only when the program's own rows fill a warpgroup's m64:
    the dK pass owns block_n key rows, the forward and dQ passes block_m query rows."""
    for dim in (64, 128, 256, 512, 1024):
        for dtype in (torch.bfloat16, torch.float16):
            assert gin.table_config("sm90", "fwd", dim, dtype).block_m >= 64
            assert gin.table_config("sm90", "dq", dim, dtype).block_m >= 64
            assert gin.table_config("sm90", "dk", dim, dtype).block_n >= 64


@pytest.mark.parametrize(
    ("hip", "capability", "generation"),
    [
        (None, (9, 0), "sm90"),
        (None, (8, 0), "sm80"),
        (None, (8, 6), "sm86"),
        (None, (8, 9), "sm86"),
        (None, (7, 5), "fallback"),
        (None, (10, 0), "fallback"),
        (None, (12, 0), "fallback"),
        ("6.2.41133", (9, 4), "fallback"),  # MI300 on ROCm: 64 KB of LDS, never the sm_90 rows
        ("6.2.41133", (9, 0), "fallback"),  # MI200 reports (9, 0) too
    ],
)
def test_architecture_of_a_device(
    monkeypatch: pytest.MonkeyPatch, hip: str | None, capability: tuple[int, int], generation: str
) -> None:
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    gin._generation.cache_clear()
    try:
        assert gin._generation(0) == generation
    finally:
        gin._generation.cache_clear()


# --- the table's GPU shapes, numerically, under the interpreter -------------------------------------------

#: (table rows, D): the configurations a GPU runs at that D, forced on the interpreter.
TABLE_PATHS = [
    # sm_90 2-byte rows at D = 128: forward and dQ BLOCK_M = 128, dK 64 × 64, all resident.
    ("sm90", torch.bfloat16, 128),
    # sm_90 at D = 256: forward BLOCK_M = 128 resident over 256 columns, dQ 64, dK 64 own key rows.
    ("sm90", torch.bfloat16, 256),
    # sm_80 at D = 200 (resident, block_d 256 > D: masked columns), dK BLOCK 64 × 32.
    ("sm80", torch.bfloat16, 200),
    # sm_86/89 at D = 300: streamed D in 64-wide chunks, 128-wide output blocks (3 D blocks).
    ("sm86", torch.bfloat16, 300),
    # fp32 rows at D = 160: 32-wide chunks, 2 output blocks of 128.
    ("sm90", torch.float32, 160),
]


@needs_triton
@pytest.mark.parametrize(("generation", "table_dtype", "dim"), TABLE_PATHS, ids=str)
@pytest.mark.parametrize("shape", ["self_contrast", "symmetric_groups", "queue"])
def test_table_configurations_match_dense_formula(
    monkeypatch: pytest.MonkeyPatch, generation: str, table_dtype: torch.dtype, dim: int, shape: str
) -> None:
    used = []

    def config(kind, device, d, dtype=None):
        cfg = gin.table_config(generation, kind, d, table_dtype)
        used.append((kind, cfg))
        return cfg

    monkeypatch.setattr(gin, "tile_config", config)
    gen = torch.Generator().manual_seed(dim)
    n = 200  # not a multiple of 64 or 128: a partial row block in every pass
    m = 136
    q64 = F.normalize(torch.randn(n, dim, generator=gen, dtype=torch.float64), dim=1)
    k64 = F.normalize(torch.randn(m, dim, generator=gen, dtype=torch.float64), dim=1)
    kwargs: dict = {"reduction": "none"}
    if shape == "self_contrast":
        k64, m = q64, n
        q_ids = k_ids = torch.arange(n) // 2
        kwargs.update(exclude_self=True)
    elif shape == "symmetric_groups":
        q_ids, k_ids = torch.arange(n) % 50, torch.arange(m) % 50
        q_groups = torch.sort(torch.randint(0, 3, (n,), generator=gen)).values
        k_groups = torch.sort(torch.randint(0, 3, (m,), generator=gen)).values
        kwargs.update(symmetric=True, q_groups=q_groups, k_groups=k_groups, exclude_self=False)
    else:  # a queue: only the first 70 keys get a gradient
        q_ids, k_ids = torch.arange(n) % 70, torch.cat([torch.arange(70), torch.randint(-1, 70, (m - 70,))])
        kwargs.update(n_key_grad=70, exclude_self=False)
    common = dict(tau=0.1, learn_tau=True, shared=shape == "self_contrast", device="cpu", **kwargs)
    want = loss_and_grads(
        naive_grouped_info_nce, q64.clone(), k64.clone(), q_ids, k_ids, dtype=torch.float64, **common
    )
    got = loss_and_grads(
        grouped_info_nce, q64, k64, q_ids, k_ids, dtype=torch.float32, backend="triton", **common
    )
    assert_grads_close(got, want, f"{generation} {table_dtype} D={dim} {shape}", atol=1e-5, rtol=1e-5)
    # The launches really ran the table's shapes.
    fwd = next(cfg for kind, cfg in used if kind == "fwd")
    assert fwd == gin.table_config(generation, "fwd", dim, table_dtype)
    assert {kind for kind, _ in used} >= {"fwd", "dq"}
