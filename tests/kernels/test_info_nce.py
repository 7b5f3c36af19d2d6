"""Grouped InfoNCE: Triton kernel and chunked torch reference against the dense formula.

Without a GPU the Triton kernel runs under TRITON_INTERPRET=1 (set by tests/conftest.py before the
kernels are imported) in fp32 with 32×32 tiles, so the shapes below cover one partial tile, several
tiles and odd sizes. The oracle is the naive dense reference evaluated in float64: the fp32 kernel and
the fp32 chunked reference must match it to 1e-5 (loss, dQ, dK, dτ), with a random grad_output.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from clinseq.errors import ConfigError, ShapeError
from clinseq.kernels import (
    HAS_TRITON,
    TileConfig,
    chunked_grouped_info_nce,
    cpc_ids,
    cpc_info_nce,
    grouped_info_nce,
    naive_grouped_info_nce,
)
from clinseq.kernels import info_nce as gin

from ._grads import assert_grads_close, loss_and_grads

CUDA = torch.cuda.is_available()
TRITON_RUNS = HAS_TRITON and (CUDA or gin.INTERPRETED)
DEVICE = "cuda" if CUDA else "cpu"
needs_triton = pytest.mark.skipif(
    not TRITON_RUNS, reason="Triton needs CUDA, or TRITON_INTERPRET=1 before clinseq.kernels is imported"
)


@dataclass(frozen=True)
class Case:
    """One call: shapes, id pattern and options."""

    n: int
    m: int
    d: int
    ids: str  # distinct | pairs | groups4 | sparse | none | same | queue
    exclude_self: bool = False
    shared: bool = False  # q and k are the same tensor (SimCLR's stacked views)...
    same_ids: bool = True  # ...and, when shared, k_ids is q_ids (the kernel's one-pass self-contrast mode)
    symmetric: bool = False
    groups: bool = False
    n_key_grad: int | None = None
    k_requires_grad: bool = True
    learn_tau: bool = False
    tau: float = 0.2
    normalized: bool = False
    reduction: str = "none"
    id_dtype: str = "int64"  # int32 | int64 | mixed (q int32, k int64)

    def __str__(self) -> str:
        flags = [
            f
            for f in ("exclude_self", "shared", "symmetric", "groups", "learn_tau", "normalized")
            if getattr(self, f)
        ]
        nk = "" if self.n_key_grad is None else f"-nk{self.n_key_grad}"
        kg = "" if self.k_requires_grad else "-nokgrad"
        kg += "-idcopy" if self.shared and not self.same_ids else ""
        dt = "" if self.id_dtype == "int64" else f"-{self.id_dtype}"
        return f"{self.n}x{self.m}x{self.d}-{self.ids}-{self.reduction}{nk}{kg}{dt}-" + "-".join(flags)


def _ids(case: Case, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, m = case.n, case.m
    if case.ids == "distinct":  # one positive per row (CLIP pairs) where i < M
        return torch.arange(n), torch.arange(m)
    if case.ids == "pairs":  # SimCLR: rows 2j and 2j+1 are the two views of sample j
        return torch.arange(n) // 2, torch.arange(m) // 2
    if case.ids == "groups4":
        return torch.arange(n) // 4, torch.arange(m) // 4
    if case.ids == "sparse":  # some rows have no positive, others several
        return torch.randint(0, n, (n,), generator=gen), torch.randint(0, n, (m,), generator=gen)
    if case.ids == "none":
        return torch.arange(n) + m, torch.arange(m)
    if case.ids == "same":
        return torch.zeros(n, dtype=torch.long), torch.zeros(m, dtype=torch.long)
    if case.ids == "queue":  # batch keys = the queries' partners, then a queue with some matching ids
        nb = case.n_key_grad
        queue = torch.randint(-1, n, (m - nb,), generator=gen)
        return torch.arange(n), torch.cat([torch.arange(nb), queue])
    raise AssertionError(case.ids)


def _inputs(case: Case, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q_ids, k_ids = _ids(case, gen)
    if case.shared and case.same_ids and case.id_dtype == "int64":
        k_ids = q_ids
    if case.id_dtype != "int64":
        q_ids = q_ids.int()
        k_ids = k_ids.int() if case.id_dtype == "int32" else k_ids
    q = F.normalize(torch.randn(case.n, case.d, generator=gen, dtype=torch.float64), dim=1)
    k = (
        q
        if case.shared
        else F.normalize(torch.randn(case.m, case.d, generator=gen, dtype=torch.float64), dim=1)
    )
    groups = None
    if case.groups:
        groups = (
            torch.randint(0, 3, (case.n,), generator=gen),
            torch.randint(0, 3, (case.m,), generator=gen),
        )
        if case.shared:
            groups = (groups[0], groups[0])
    return q, k, q_ids, k_ids, groups


def _evaluate(
    fn, case: Case, dtype: torch.dtype, seed: int = 0, round_to: torch.dtype | None = None, **extra
):
    """Loss and gradients (dq, dk, dτ) of ``fn`` on ``case`` with a random grad_output.

    ``round_to`` rounds the inputs to that dtype first (a float64 reference of half-precision inputs).
    """
    q64, k64, q_ids, k_ids, groups = _inputs(case, seed)
    if round_to is not None:
        q64, k64 = q64.to(round_to).double(), k64.to(round_to).double()
    kwargs = dict(
        exclude_self=case.exclude_self,
        symmetric=case.symmetric,
        reduction=case.reduction,
        n_key_grad=case.n_key_grad,
        k_requires_grad=case.k_requires_grad,
        normalized=case.normalized,
    )
    if groups is not None:
        kwargs.update(q_groups=groups[0].to(DEVICE), k_groups=groups[1].to(DEVICE))
    return loss_and_grads(
        fn, q64, k64, q_ids, k_ids, dtype=dtype, device=DEVICE, tau=case.tau, learn_tau=case.learn_tau,
        shared=case.shared, seed=seed, **kwargs, **extra,
    )  # fmt: skip


def _assert_matches(got, want, atol: float, rtol: float, what: str) -> None:
    assert_grads_close(got, want, what, atol, rtol, absent_may_be_zero=True)


CASES = [
    Case(1, 7, 3, "distinct"),
    Case(7, 7, 16, "groups4", exclude_self=True, shared=True, learn_tau=True),
    Case(64, 96, 64, "groups4", exclude_self=True, reduction="mean"),
    Case(129, 129, 100, "pairs", exclude_self=True, shared=True, learn_tau=True, tau=0.1),
    Case(256, 256, 16, "distinct", symmetric=True, learn_tau=True, tau=0.07),
    Case(100, 100, 32, "queue", n_key_grad=40, learn_tau=True),
    Case(96, 80, 16, "sparse", groups=True, exclude_self=True, reduction="sum"),
    Case(50, 50, 16, "pairs", groups=True, exclude_self=True, shared=True, symmetric=True, learn_tau=True),
    Case(33, 33, 16, "none", exclude_self=True, reduction="mean", learn_tau=True),
    Case(129, 64, 64, "groups4", exclude_self=True, normalized=True, learn_tau=True),
    Case(80, 50, 16, "same", exclude_self=True, k_requires_grad=False),
    Case(64, 64, 16, "sparse", symmetric=True, k_requires_grad=False, reduction="mean"),
    Case(40, 70, 8, "groups4", groups=True, symmetric=True, normalized=True, reduction="sum", tau=0.5),
    Case(90, 61, 16, "sparse", groups=True, exclude_self=True, symmetric=True, id_dtype="int32"),
    Case(97, 97, 24, "groups4", groups=True, exclude_self=True, shared=True, same_ids=False, learn_tau=True),
    Case(97, 97, 24, "groups4", groups=True, exclude_self=True, shared=True, learn_tau=True, reduction="sum"),
    Case(66, 66, 16, "sparse", shared=True, symmetric=True, learn_tau=True),
    Case(70, 70, 32, "pairs", exclude_self=True, shared=True, learn_tau=True, id_dtype="mixed"),
]


def _sweep() -> list[Case]:
    """Every id pattern × exclude_self × symmetric, shapes (N, M, D) cycling through odd and even sizes."""
    shapes = [
        (1, 5, 3),
        (7, 9, 16),
        (64, 48, 64),
        (129, 100, 100),
        (256, 200, 16),
        (100, 129, 3),
        (33, 256, 64),
        (200, 7, 16),
    ]
    cases, i = [], 0
    for ids in ("distinct", "pairs", "groups4", "sparse", "queue"):
        for exclude_self in (False, True):
            for symmetric in (False, True):
                if ids == "queue" and symmetric:
                    continue  # a partial n_key_grad has no symmetric form
                n, m, d = shapes[i % len(shapes)]
                cases.append(
                    Case(
                        n,
                        m,
                        d,
                        ids,
                        exclude_self=exclude_self,
                        symmetric=symmetric,
                        learn_tau=True,
                        n_key_grad=max(1, m // 3) if ids == "queue" else None,
                        reduction=("none", "mean", "sum")[i % 3],
                        tau=(0.1, 0.2, 0.5)[i % 3],
                    )
                )
                i += 1
    return cases


CASES += _sweep()


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_matches_dense_formula(case: Case, backend: str) -> None:
    if backend == "triton" and not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    want = _evaluate(naive_grouped_info_nce, case, torch.float64)
    extra = {"chunk_rows": 17} if backend == "torch" else {}  # odd chunks, several per call
    fn = chunked_grouped_info_nce if backend == "torch" else grouped_info_nce
    if backend == "triton":
        extra = {"backend": "triton"}
    got = _evaluate(fn, case, torch.float32, **extra)
    _assert_matches(got, want, atol=1e-5, rtol=1e-5, what=f"{backend} {case}")


@needs_triton
@pytest.mark.parametrize(
    "case",
    [
        Case(70, 45, 100, "groups4", exclude_self=True, learn_tau=True),
        Case(48, 48, 72, "pairs", shared=True, exclude_self=True, symmetric=True, groups=True),
    ],
    ids=str,
)
def test_streamed_d_path(monkeypatch: pytest.MonkeyPatch, case: Case) -> None:
    """D larger than the contraction chunk: S accumulated over D chunks, a D-block grid axis in backward."""
    monkeypatch.setattr(
        gin, "tile_config", lambda kind, device, dim, dtype=None: TileConfig(32, 16, 16, 32, 4, 1)
    )
    want = _evaluate(naive_grouped_info_nce, case, torch.float64)
    got = _evaluate(grouped_info_nce, case, torch.float32, backend="triton")
    _assert_matches(got, want, atol=1e-5, rtol=1e-5, what=str(case))


@needs_triton
def test_unnormalised_large_logits_keep_running_max() -> None:
    # |s| up to ~400: a fixed-max shortcut would overflow; the running max must not.
    case = Case(40, 40, 16, "pairs", exclude_self=True, shared=True, tau=0.05)
    q64, _, q_ids, _, _ = _inputs(case)
    q = (q64 * 4.5).float()
    got = grouped_info_nce(q, q, q_ids, q_ids, 0.05, reduction="none", backend="triton")
    want = naive_grouped_info_nce(q.double(), q.double(), q_ids, q_ids, 0.05, reduction="none")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-5)


def test_no_positive_anywhere_gives_zero_not_nan() -> None:
    q = torch.randn(6, 4, requires_grad=True)
    for backend in ["torch", "naive"] + (["triton"] if TRITON_RUNS else []):
        q.grad = None
        loss = grouped_info_nce(q, q, torch.arange(6), torch.arange(6), 0.1, backend=backend)
        loss.backward()
        assert loss.item() == 0.0, backend
        assert torch.equal(q.grad, torch.zeros_like(q)), backend


def test_queue_rows_get_no_gradient_and_k_requires_grad_false_gives_none() -> None:
    q = F.normalize(torch.randn(8, 16), dim=1).requires_grad_()
    k = F.normalize(torch.randn(20, 16), dim=1).requires_grad_()
    ids = torch.arange(20) % 8
    for backend in ["torch"] + (["triton"] if TRITON_RUNS else []):
        q.grad = k.grad = None
        grouped_info_nce(q, k, torch.arange(8), ids, 0.1, n_key_grad=8, backend=backend).backward()
        assert k.grad[:8].abs().sum() > 0 and torch.equal(k.grad[8:], torch.zeros(12, 16)), backend
        q.grad = k.grad = None
        grouped_info_nce(q, k, torch.arange(8), ids, 0.1, k_requires_grad=False, backend=backend).backward()
        assert k.grad is None and q.grad is not None, backend


def test_loss_values_for_a_hand_computed_case() -> None:
    # Two rows, orthogonal unit vectors, τ = 1: s = [[1, 0], [0, 1]]; with exclude_self=False and
    # ids 0,1 each row's positive is its own index: L = log(e + 1) − 1 for both rows.
    q = torch.eye(2)
    expected = torch.log(torch.tensor(torch.e + 1.0)) - 1.0
    for backend in ["torch", "naive"] + (["triton"] if TRITON_RUNS else []):
        loss = grouped_info_nce(
            q, q, torch.arange(2), torch.arange(2), 1.0, exclude_self=False, backend=backend, reduction="none"
        )
        torch.testing.assert_close(loss, expected.expand(2), atol=1e-6, rtol=0)


def test_gradcheck_chunked_reference_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(9, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    k = torch.randn(11, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    q_ids, k_ids = torch.arange(9) % 4, torch.arange(11) % 5
    q_groups, k_groups = torch.arange(9) % 2, torch.arange(11) % 2

    def plain(q, k, tau):
        return chunked_grouped_info_nce(q, k, q_ids, k_ids, tau, reduction="none", chunk_rows=4)

    def grouped_symmetric(q, k, tau):
        return chunked_grouped_info_nce(
            q, k, q_ids, k_ids, tau, symmetric=True, q_groups=q_groups, k_groups=k_groups, chunk_rows=3
        )

    for fn in (plain, grouped_symmetric):
        assert torch.autograd.gradcheck(fn, (q, k, tau)), fn.__name__
    # Queue rows are constants by contract (stop-gradient), so check against the batch keys alone.
    queue = torch.randn(5, 5, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(
        lambda q, kb, t: chunked_grouped_info_nce(
            q, torch.cat([kb, queue]), q_ids, k_ids, t, n_key_grad=6, reduction="sum", chunk_rows=5
        ),
        (q, k[:6].detach().requires_grad_(), tau),
    )
    # Self-exclusion on one shared tensor (SimCLR): q and k are the same leaf.
    ids = torch.arange(9) // 3
    assert torch.autograd.gradcheck(
        lambda z, t: chunked_grouped_info_nce(z, z, ids, ids, t, chunk_rows=2), (q, tau)
    )


def test_chunked_reference_matches_naive_at_larger_n() -> None:
    gen = torch.Generator().manual_seed(5)
    n, d = 3000, 64
    z = F.normalize(torch.randn(n, d, generator=gen), dim=1)
    ids = torch.randint(0, 600, (n,), generator=gen)
    groups = torch.randint(0, 4, (n,), generator=gen)
    results = []
    for fn in (chunked_grouped_info_nce, naive_grouped_info_nce):
        x = z.clone().requires_grad_()
        loss = fn(x, x, ids, ids, 0.1, q_groups=groups, k_groups=groups, symmetric=True)
        loss.backward()
        results.append((loss.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-8, rtol=1e-4)


def _dense_cpc(predictions: torch.Tensor, z: torch.Tensor, tau: float) -> torch.Tensor:
    """CPC written out: for each step k, cross-entropy of (b, t) against all B·T frames, target (b, t+k)."""
    n_steps, batch, n_frames, dim = predictions.shape
    keys = z.reshape(batch * n_frames, dim)
    losses = []
    for k in range(1, n_steps + 1):
        if k >= n_frames:
            continue
        p = predictions[k - 1, :, : n_frames - k].reshape(-1, dim)
        target = (torch.arange(batch)[:, None] * n_frames + torch.arange(k, n_frames)[None, :]).reshape(-1)
        losses.append(F.cross_entropy(p @ keys.T / tau, target, reduction="none"))
    return torch.cat(losses).mean()


@pytest.mark.parametrize("backend", ["torch"] + (["triton"] if TRITON_RUNS else []))
def test_cpc_matches_dense_formula(backend: str) -> None:
    gen = torch.Generator().manual_seed(11)
    n_steps, batch, n_frames, dim = 4, 3, 13, 16
    preds = (torch.randn(n_steps, batch, n_frames, dim, generator=gen) * 0.5).requires_grad_()
    z = (torch.randn(batch, n_frames, dim, generator=gen) * 0.5).requires_grad_()
    want = _dense_cpc(preds.double(), z.double(), 0.8)
    gp, gz = torch.autograd.grad(want, (preds, z))
    got = cpc_info_nce(preds, z, 0.8, backend=backend)
    hp, hz = torch.autograd.grad(got, (preds, z))
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hp, gp.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hz, gz.float(), atol=1e-5, rtol=1e-5)
    rows = cpc_info_nce(preds.detach(), z.detach(), 0.8, reduction="none", backend=backend)
    assert rows.shape == (n_steps, batch, n_frames)
    # Predictions past the end (t + k ≥ T) are dropped: exactly zero.
    for k in range(1, n_steps + 1):
        assert torch.equal(rows[k - 1, :, n_frames - k :], torch.zeros(batch, k))


def test_cpc_ids_encode_targets() -> None:
    q_ids, k_ids = cpc_ids(2, 2, 3)
    # step 1: (b, t) → b·3 + t + 1 for t < 2; step 2: t < 1.
    assert q_ids.tolist() == [1, 2, -1, 4, 5, -1, 2, -1, -1, 5, -1, -1]
    assert k_ids.tolist() == list(range(6))


def test_invalid_inputs_raise_shape_or_config_error() -> None:
    """Tensors that do not fit raise ShapeError, settings that do not fit ConfigError (both ValueErrors)."""
    q, k = torch.randn(4, 8), torch.randn(5, 8)
    qi, ki = torch.arange(4), torch.arange(5)
    bad = [
        (dict(q=torch.randn(4)), "2-D", ShapeError),
        (dict(k=torch.randn(5, 7)), "embedding size", ShapeError),
        (dict(k=torch.randn(5, 8, dtype=torch.float64)), "same dtype", ShapeError),
        (dict(q=torch.arange(32).reshape(4, 8)), "float16", ShapeError),
        (dict(q_ids=torch.arange(5)), r"\(N,\) = \(4,\)", ShapeError),
        (dict(k_ids=torch.arange(5.0)), "integers", ShapeError),
        (dict(temperature=0.0), "> 0", ConfigError),
        (dict(temperature=torch.ones(2)), "one-element", ShapeError),
        (dict(reduction="avg"), "reduction", ConfigError),
        (dict(backend="cuda"), "backend", ConfigError),
        (dict(n_key_grad=6), r"\[0, M\]", ShapeError),
        (dict(n_key_grad=2, k_requires_grad=False), "contradicts", ConfigError),
        (dict(n_key_grad=2, symmetric=True), "symmetric", ShapeError),
        (dict(q_groups=torch.zeros(4, dtype=torch.long)), "together", ShapeError),
    ]
    for override, match, error in bad:
        args = dict(q=q, k=k, q_ids=qi, k_ids=ki, temperature=0.1)
        args.update(override)
        call = {key: args.pop(key) for key in ("q", "k", "q_ids", "k_ids", "temperature")}
        with pytest.raises(error, match=match):
            grouped_info_nce(call["q"], call["k"], call["q_ids"], call["k_ids"], call["temperature"], **args)
    with pytest.raises(ShapeError, match=r"\(K, B, T, D\)"):
        cpc_info_nce(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ShapeError, match="match predictions"):
        cpc_info_nce(torch.randn(2, 3, 4, 5), torch.randn(3, 3, 5))


@needs_triton
def test_triton_backend_rejects_what_it_cannot_run() -> None:
    ids = torch.arange(2)
    with pytest.raises(ShapeError, match="float64"):
        grouped_info_nce(
            torch.randn(2, 8).double(), torch.randn(2, 8).double(), ids, ids, 0.1, backend="triton"
        )
    with pytest.raises(ShapeError, match="D <= 1024"):
        grouped_info_nce(torch.randn(2, 1025), torch.randn(2, 1025), ids, ids, 0.1, backend="triton")


def test_triton_backend_on_cpu_without_interpreter_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    if CUDA or not HAS_TRITON:
        pytest.skip("checks the CPU message of an installed Triton")
    monkeypatch.setattr(gin, "INTERPRETED", False)
    ids = torch.arange(3)
    with pytest.raises(ConfigError, match="TRITON_INTERPRET=1"):
        grouped_info_nce(torch.randn(3, 4), torch.randn(3, 4), ids, ids, 0.1, backend="triton")


def test_auto_backend_uses_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(gin, "chunked_grouped_info_nce", lambda *a, **kw: calls.append(kw) or torch.zeros(()))
    grouped_info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.arange(3), torch.arange(3), 0.1)
    assert len(calls) == (0 if CUDA else 1)


# Half precision: the reference (float64) sees the same rounded inputs, so the remaining error is the
# cast of G to the input dtype before the dQ/dK products (fp16: 11 mantissa bits, bf16: 8) and the
# accumulation of the loss from rounded products (fp32 accumulators). Tolerances are relative to each
# tensor's largest entry. fp16 also runs under the interpreter (numpy float16); bf16 needs a GPU (the
# interpreter gives garbage for it). Measured under the interpreter: fp16 gradients within 6e-4.
HALF_PRECISION = [
    pytest.param(torch.float16, 4e-3, marks=needs_triton, id="fp16"),
    pytest.param(
        torch.bfloat16, 2e-2, marks=pytest.mark.skipif(not CUDA, reason="bf16 needs a GPU"), id="bf16"
    ),
    pytest.param(
        torch.float32, 1e-5, marks=pytest.mark.skipif(not CUDA, reason="CPU fp32 is covered above"), id="fp32"
    ),
]
HALF_CASES = [
    Case(200, 200, 64, "pairs", exclude_self=True, shared=True, learn_tau=True, reduction="mean"),
    Case(150, 230, 96, "queue", n_key_grad=60, reduction="mean", tau=0.07),
    Case(128, 128, 64, "groups4", groups=True, symmetric=True, exclude_self=True, reduction="mean"),
]
if CUDA:  # sizes with many tiles per row, the resident and the streamed-D paths
    HALF_CASES += [
        Case(4000, 4000, 256, "pairs", exclude_self=True, shared=True, learn_tau=True, reduction="mean"),
        Case(777, 1500, 128, "queue", n_key_grad=300, reduction="mean", tau=0.07),
        Case(513, 513, 384, "groups4", groups=True, symmetric=True, exclude_self=True, reduction="mean"),
    ]


@pytest.mark.parametrize(("dtype", "tol"), HALF_PRECISION)
@pytest.mark.parametrize("case", HALF_CASES, ids=str)
def test_half_precision_against_fp64_reference(case: Case, dtype: torch.dtype, tol: float) -> None:
    want = _evaluate(naive_grouped_info_nce, case, torch.float64, round_to=dtype)
    got = _evaluate(grouped_info_nce, case, dtype, backend="triton")
    # Gradients are compared relative to their own scale (mean reduction makes them ~1/N).
    for name, g, w in zip(("loss", "dq", "dk", "dtau"), got, want, strict=True):
        if w is None:
            continue
        scale = w.abs().max().clamp_min(1e-30)
        torch.testing.assert_close(
            g.double().cpu() / scale,
            w.double().cpu() / scale,
            atol=tol,
            rtol=tol,
            msg=lambda m, n=name: f"{dtype} {case}: {n}: {m}",
        )


@needs_triton
def test_self_contrast_runs_one_backward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """q is k with one id tensor: one row-parallel backward pass; distinct id tensors: dQ and dK passes."""
    passes = []
    launch = gin._launch_backward
    monkeypatch.setattr(
        gin, "_launch_backward", lambda rows_are_q, *a: passes.append(rows_are_q) or launch(rows_are_q, *a)
    )
    z = F.normalize(torch.randn(40, 16), dim=1).requires_grad_()
    ids = torch.arange(40) // 2
    grads = []
    for k_ids in (ids, ids.clone()):
        passes.clear()
        z.grad = None
        grouped_info_nce(z, z, ids, k_ids, 0.1, backend="triton").backward()
        grads.append((list(passes), z.grad.clone()))
    assert grads[0][0] == [True] and grads[1][0] == [True, False]
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_autocast_keeps_fp32_accumulation(backend: str) -> None:
    """Inside a bf16 autocast block (forward and backward, as a training step runs them) the loss and
    gradients equal the fp32 ones: the kernels turn autocast off and accumulate in fp32 themselves.
    (The naive oracle is plain autograd: its backward matmuls follow the caller's autocast.)"""
    gen = torch.Generator().manual_seed(5)
    q = torch.nn.functional.normalize(torch.randn(48, 24, generator=gen), dim=1).requires_grad_()
    ids = torch.arange(48) // 2
    expected = grouped_info_nce(q, q, ids, ids, 0.1, backend=backend)
    (expected_grad,) = torch.autograd.grad(expected, q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = grouped_info_nce(q, q, ids, ids, 0.1, backend=backend)
        loss.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(q.grad, expected_grad, rtol=0, atol=0)


# --- q and k sharing memory: self-contrast only when k IS q ---------------------------------------------

#: How q and k are made from two leaves, z and w = z.detach().requires_grad_() (one storage, two autograd
#: inputs): every combination of shared memory and requires_grad a caller can pass.
SHARING = {
    "same_tensor": lambda z, w: (z, z),
    "k_detached": lambda z, w: (z, z.detach()),
    "q_detached": lambda z, w: (z.detach(), z),
    "both_detached": lambda z, w: (z.detach(), z.detach()),
    "two_leaves_one_storage": lambda z, w: (z, w),
    "two_views_of_one_leaf": lambda z, w: (z.view_as(z), z.view_as(z)),
    "view_and_its_detached_view": lambda z, w: (z[:], z[:].detach()),
}


def _shared_storage_grads(fn, how: str, dtype: torch.dtype, **kwargs):
    gen = torch.Generator().manual_seed(11)
    z64 = F.normalize(torch.randn(40, 16, generator=gen, dtype=torch.float64), dim=1)
    z = z64.to(dtype).requires_grad_()
    w = z.detach().requires_grad_()
    assert w.data_ptr() == z.data_ptr()
    tau = torch.tensor(0.2, dtype=dtype, requires_grad=True)  # dτ flows even when q and k are constants
    ids = torch.arange(40) // 2
    q, k = SHARING[how](z, w)
    loss = fn(q, k, ids, ids, tau, exclude_self=True, reduction="none", **kwargs)
    weights = torch.rand(loss.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (loss * (2 * weights - 0.5).to(loss.dtype)).sum().backward()
    return loss.detach(), z.grad, w.grad, tau.grad


@pytest.mark.parametrize("how", sorted(SHARING))
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_shared_storage_keeps_each_inputs_autograd(backend: str, how: str) -> None:
    """z with z.detach() (either side), two leaves on one storage, two views: each input gets exactly its
    own gradient, as in the dense formula (issue 20: a detached k used to be treated as q itself)."""
    if backend == "triton" and not TRITON_RUNS:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    want = _shared_storage_grads(naive_grouped_info_nce, how, torch.float64)
    got = _shared_storage_grads(grouped_info_nce, how, torch.float32, backend=backend)
    for name, g, wnt in zip(("loss", "dz", "dw", "dtau"), got, want, strict=True):
        if wnt is None:
            assert g is None, f"{how}: {name} should be absent"
            continue
        assert g is not None, f"{how}: {name} missing"
        torch.testing.assert_close(
            g.double(), wnt, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{how} {n}: {m}"
        )


@needs_triton
@pytest.mark.parametrize(
    "how", ["same_tensor", "k_detached", "two_leaves_one_storage", "two_views_of_one_leaf"]
)
def test_one_pass_backward_only_for_one_autograd_input(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    passes = []
    launch = gin._launch_backward
    monkeypatch.setattr(
        gin, "_launch_backward", lambda rows_are_q, *a: passes.append(rows_are_q) or launch(rows_are_q, *a)
    )
    _shared_storage_grads(grouped_info_nce, how, torch.float32, backend="triton")
    # One row-parallel pass for q is k; otherwise dQ (also carries dτ) and, when k needs a gradient, dK.
    expected = {
        "same_tensor": [True],
        "k_detached": [True],
        "two_leaves_one_storage": [True, False],
        "two_views_of_one_leaf": [True, False],
    }[how]
    assert passes == expected


# --- normalized=True below the fixed-max temperature ---------------------------------------------------


@needs_triton
# The backward evaluates exp2(s − lse) on every entry of a tile before masking the invalid ones (the
# diagonal, s = 1/τ = 200 here, overflows to inf and is then discarded): numpy warns, the result is exact.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")
@pytest.mark.parametrize("tau", [0.005, 0.05])
@pytest.mark.parametrize("learn_tau", [False, True])
def test_normalized_small_tau_falls_back_to_running_max(tau: float, learn_tau: bool) -> None:
    """Rows ±e_j (every candidate s ≤ 0): with the fixed max 1/τ at τ = 0.005 every exp2 of a row would
    underflow (2^(−288)) and its loss be −inf/NaN. Below NORMALIZED_MIN_TAU the kernel keeps a running
    max instead, decided on the device (τ may be a tensor); above it the fixed max is exact."""
    assert 0.005 < gin.NORMALIZED_MIN_TAU < 0.05
    gen = torch.Generator().manual_seed(2)
    basis = torch.eye(16, dtype=torch.float64)
    z64 = torch.stack([basis, -basis], dim=1).reshape(32, 16)  # rows 2j = e_j, 2j+1 = −e_j: a pair
    z64 = F.normalize(z64 + 0.01 * torch.randn(32, 16, generator=gen, dtype=torch.float64), dim=1)
    ids = torch.arange(32) // 2

    def run(fn, dtype, **kw):
        z = z64.detach().clone().to(dtype).requires_grad_()
        t = torch.tensor(tau, dtype=dtype, requires_grad=True) if learn_tau else tau
        loss = fn(z, z, ids, ids, t, normalized=True, reduction="sum", **kw)
        loss.backward()
        return loss.detach(), z.grad, t.grad if learn_tau else None

    want = run(naive_grouped_info_nce, torch.float64)
    got = run(grouped_info_nce, torch.float32, backend="triton")
    assert torch.isfinite(got[0]), got[0]
    for g, w in zip(got, want, strict=True):
        if w is not None:
            torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-3)


# --- symmetric mode reads the caller's tensors, scaled inside the kernel ------------------------------


@needs_triton
def test_symmetric_launches_on_the_callers_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both directions of the symmetric loss launch on q and k themselves (τ scales S inside the
    kernel): no scaled or transposed copy of the inputs is made."""
    seen = []
    launch = gin._launch_forward
    monkeypatch.setattr(
        gin, "_launch_forward", lambda q, k, *a: seen.append((q.data_ptr(), k.data_ptr())) or launch(q, k, *a)
    )
    q = torch.randn(50, 16, requires_grad=True)
    k = torch.randn(40, 16, requires_grad=True)
    grouped_info_nce(
        q, k, torch.arange(50), torch.arange(40), 0.1, symmetric=True, backend="triton"
    ).backward()
    assert seen == [(q.data_ptr(), k.data_ptr()), (k.data_ptr(), q.data_ptr())]
