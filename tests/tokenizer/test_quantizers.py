"""Tests for tokenizer/quantizers.py and tokenizer/fsq.py: tiny sizes, CPU."""

import dataclasses
import json
import math
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tessera.tokenizer.codebook_stats import code_histogram, codebook_stats, stats_from_histogram
from tessera.tokenizer.config import QuantizerConfig
from tessera.tokenizer.quantizers import QuantizerOutput, VectorQuantizer, build_quantizer
from tessera.tokenizer.quantizers.fsq import FiniteScalarQuantizer

C = 16  # encoder channels
K = 16  # codebook size (vq)

CONFIGS = {
    "plain": QuantizerConfig(codebook_size=K, code_dim=C, l2_normalize=False),
    "l2": QuantizerConfig(codebook_size=K, code_dim=C, l2_normalize=True),
    "factorised": QuantizerConfig(codebook_size=K, code_dim=4, l2_normalize=True),
    "ema": QuantizerConfig(codebook_size=K, code_dim=C, l2_normalize=False, ema=True),
    "kmeans": QuantizerConfig(codebook_size=K, code_dim=4, l2_normalize=False, kmeans_init=True),
    "reseed": QuantizerConfig(codebook_size=K, code_dim=4, dead_code_threshold=1.0),
    "fsq": QuantizerConfig(kind="fsq", fsq_levels=(5, 4, 3)),
}
ALL = list(CONFIGS)
VQ = [name for name in ALL if name != "fsq"]


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_quantizer(CONFIGS[name], C)


def make_z(seed: int = 1, batch: int = 2, size: int = 4, channels: int = C) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=generator)


def tokens(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*h*w, C)


# --------------------------------------------------------------------------- shapes, gradients


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("training", [True, False])
def test_shapes_and_dtypes(name, training):
    quantizer = make(name).train(training)
    out = quantizer(make_z())
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == (2, C, 4, 4) and out.quantized.dtype == torch.float32
    assert out.codes.shape == (2, 4, 4) and out.codes.dtype == torch.long
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < quantizer.codebook_size
    for scalar in (out.loss, out.commitment_loss, out.codebook_loss, out.usage, out.perplexity):
        assert scalar.shape == () and scalar.dtype == torch.float32 and torch.isfinite(scalar)
    assert 0 < out.usage <= 1 and 1 <= out.perplexity <= quantizer.codebook_size
    assert not out.commitment_loss.requires_grad and not out.codebook_loss.requires_grad


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_encoder_and_codebook(name):
    quantizer = make(name).train()
    # k-means: initialise on another batch (codes sitting at their cluster's mean get no gradient)
    quantizer(make_z(seed=9))
    z = make_z().requires_grad_()
    out = quantizer(z)
    (out.quantized.square().sum() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    if name == "fsq":
        return
    params = dict(quantizer.named_parameters())
    if CONFIGS[name].ema:
        assert "codebook" not in params  # a buffer, moved by EMA only
    else:
        grad = params["codebook"].grad
        used = torch.zeros(K, dtype=torch.bool)
        used[out.codes.unique()] = True
        assert grad[used].abs().sum(1).gt(0).all() and grad[~used].eq(0).all()


def test_straight_through_is_identity_for_plain_vq():
    quantizer = make("plain")
    z = make_z().requires_grad_()
    quantizer(z).quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


@pytest.mark.parametrize("name", ["plain", "ema"])
def test_commitment_gradient_is_on_encoder_side_with_weight_beta(name):
    beta = 0.37
    torch.manual_seed(0)
    quantizer = build_quantizer(dataclasses.replace(CONFIGS[name], beta=beta), C).train()
    z = make_z().requires_grad_()
    out = quantizer(z)
    q = out.quantized.detach()  # the values of q (identity projections); EMA has moved the codebook since
    # The codebook term sends no gradient to z: d loss / d z is the commitment part alone.
    (grad_z,) = torch.autograd.grad(out.loss, z, retain_graph=True)
    torch.testing.assert_close(grad_z, 2 * beta * (z - q).detach() / z.numel())
    if name == "plain":
        # ... and the codebook term pulls codes towards their vectors with weight 1, not beta.
        (grad_codebook,) = torch.autograd.grad(out.loss, quantizer.codebook)
        expected = torch.zeros(K, C).index_add_(0, out.codes.reshape(-1), tokens(q - z.detach()))
        torch.testing.assert_close(grad_codebook, 2 * expected / z.numel())
    else:
        torch.testing.assert_close(out.loss, beta * out.commitment_loss)


# --------------------------------------------------------------------------- EMA, k-means, reseeding


def test_ema_moves_codebook_in_train_mode_only():
    quantizer = make("ema")
    before = quantizer.codebook.clone()
    quantizer.eval()(make_z())
    assert torch.equal(quantizer.codebook, before)
    out = quantizer.train()(make_z())
    changed = (quantizer.codebook - before).abs().sum(1) > 0  # (K,)
    used = torch.zeros(K, dtype=torch.bool)
    used[out.codes.unique()] = True
    assert changed[used].all()
    # Codes moved towards the mean of their vectors.
    means = torch.zeros(K, C).index_add_(0, out.codes.reshape(-1), tokens(make_z()))
    means = means / code_histogram(out.codes, K).clamp_min(1).unsqueeze(1)
    assert ((quantizer.codebook - means).norm(dim=1) < (before - means).norm(dim=1))[used].all()


def test_non_ema_codebook_has_no_side_effects():
    quantizer = make("l2").train()
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer(make_z())
    after = quantizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in ("usage_ema", "steps"))


def test_kmeans_runs_once_and_survives_state_dict(monkeypatch):
    quantizer = make("kmeans")
    assert not quantizer.initialized
    quantizer.eval()(make_z())
    assert not quantizer.initialized  # never in eval mode

    calls = []
    original = VectorQuantizer._kmeans_init
    monkeypatch.setattr(VectorQuantizer, "_kmeans_init", lambda self, x: (calls.append(1), original(self, x)))
    before = quantizer.codebook.detach().clone()
    quantizer.train()(make_z())
    assert quantizer.initialized and len(calls) == 1
    assert not torch.equal(quantizer.codebook, before)
    quantizer(make_z(seed=2))
    assert len(calls) == 1

    restored = make("kmeans", seed=5)
    restored.load_state_dict(quantizer.state_dict())
    assert restored.initialized and torch.equal(restored.codebook, quantizer.codebook)
    restored.train()(make_z(seed=3))
    assert len(calls) == 1


@pytest.mark.parametrize("l2", [False, True])
def test_kmeans_fits_clustered_data(l2):
    # 4 well-separated clusters, 16 codes: random starting points cover every cluster, Lloyd finds them.
    centers = 3 * torch.randn(4, C, generator=torch.Generator().manual_seed(10))  # (4, C)
    assign = torch.arange(256) % 4
    noise = 0.05 * torch.randn(256, C, generator=torch.Generator().manual_seed(11))
    flat = centers[assign] + noise  # (256, C)
    z = flat.reshape(4, 8, 8, C).permute(0, 3, 1, 2)  # (4, C, 8, 8)
    losses = {}
    for kmeans in (False, True):
        torch.manual_seed(0)
        quantizer = VectorQuantizer(C, K, C, l2_normalize=l2, kmeans_init=kmeans, kmeans_iters=10).train()
        losses[kmeans] = quantizer(z).commitment_loss
    noise_level = 0.05**2 if not l2 else 0.05**2 / centers.norm(dim=1).min() ** 2
    assert losses[True] < 2 * noise_level < 0.01 * losses[False]


@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("l2", [False, True])
def test_dead_codes_are_reseeded_from_the_batch(ema, l2):
    torch.manual_seed(0)
    quantizer = VectorQuantizer(C, K, C, l2_normalize=l2, ema=ema, dead_code_threshold=0.5, reseed_every=2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.ones(K, C))  # all codes equal: ties go to code 0, 1..K-1 never used
    if ema:
        quantizer.ema_embed_sum.copy_(torch.ones(K, C))
    z = make_z().requires_grad_()
    vectors = tokens(z.detach())  # (32, C) encoder outputs in lookup space
    if l2:
        vectors = torch.nn.functional.normalize(vectors, dim=1)

    quantizer.train()
    out = quantizer(z)
    assert out.codes.eq(0).all() and math.isclose(out.usage.item(), 1 / K)
    first_codebook = quantizer.codebook.detach().clone()
    assert torch.allclose(first_codebook[1:], torch.ones(K - 1, C), atol=1e-4)  # reseed_every=2: not yet

    out = quantizer(z)
    (out.loss + out.quantized.sum()).backward()  # in-place codebook writes do not break autograd
    reseeded = quantizer.codebook.detach()[1:]  # (K-1, C)
    distances = torch.cdist(reseeded, vectors, compute_mode="donot_use_mm_for_euclid_dist")  # (K-1, 32)
    assert distances.min(dim=1).values.max() < 1e-5
    # distinct vectors: sampled without replacement
    assert len({tuple(row.tolist()) for row in reseeded}) == K - 1
    assert quantizer.usage_ema[1:].ge(0.5).all()  # grace period
    assert quantizer(z).usage > 0.5


def test_reseeding_is_off_by_default_and_usage_ema_tracks_counts():
    quantizer = make("plain").train()
    before = quantizer.codebook.detach().clone()
    out = quantizer(make_z())
    assert torch.equal(quantizer.codebook, before)
    torch.testing.assert_close(quantizer.usage_ema, code_histogram(out.codes, K).float())
    out2 = quantizer(make_z(seed=2))
    expected = 0.99 * code_histogram(out.codes, K).float() + 0.01 * code_histogram(out2.codes, K).float()
    torch.testing.assert_close(quantizer.usage_ema, expected)
    assert int(quantizer.steps) == 2


# --------------------------------------------------------------------------- statistics


def test_codebook_stats_on_hand_made_codes():
    usage, perplexity = codebook_stats(torch.full((2, 4, 4), 3), 8)
    assert usage.item() == pytest.approx(1 / 8) and perplexity.item() == pytest.approx(1.0)
    usage, perplexity = codebook_stats(torch.arange(32).reshape(2, 4, 4) % 8, 8)
    assert usage.item() == pytest.approx(1.0) and perplexity.item() == pytest.approx(8.0)
    usage, perplexity = codebook_stats(torch.arange(32) % 4, 8)
    assert usage.item() == pytest.approx(0.5) and perplexity.item() == pytest.approx(4.0)
    usage, perplexity = stats_from_histogram(torch.zeros(8, dtype=torch.long))
    assert usage.item() == 0 and perplexity.item() == 1
    with pytest.raises(IndexError):
        code_histogram(torch.tensor([8]), 8)


def test_histograms_accumulate_over_batches():
    a, b = torch.randint(0, 8, (3, 4, 4)), torch.randint(0, 5, (2, 4, 4))
    total = code_histogram(a, 8) + code_histogram(b, 8)
    assert total.dtype == torch.long and int(total.sum()) == 80
    expected = codebook_stats(torch.cat([a.reshape(-1), b.reshape(-1)]), 8)
    for got, want in zip(stats_from_histogram(total), expected):
        torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ALL)
def test_round_trips(name):
    quantizer = make(name).eval()
    z = make_z()
    out = quantizer(z)
    assert torch.equal(quantizer.vectors_to_codes(z), out.codes)
    torch.testing.assert_close(quantizer.codes_to_vectors(out.codes), out.quantized)


@pytest.mark.parametrize("name", ALL)
def test_vectors_to_codes_has_no_side_effects(name):
    quantizer = make(name).train()
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.vectors_to_codes(make_z())
    after = quantizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fsq_indices_round_trip_over_full_codebook():
    fsq = FiniteScalarQuantizer(C, (8, 5, 5, 5))
    assert fsq.codebook_size == 1000
    codes = torch.arange(1000)
    grid = fsq.codes_to_grid(codes)  # (1000, 4)
    assert grid.abs().max() <= 1
    assert torch.equal(fsq.grid_to_codes(grid), codes)
    assert torch.unique(grid, dim=0).shape[0] == 1000


@pytest.mark.parametrize("levels", [(2, 3, 4, 5, 8), (8, 5, 5, 5), (7, 5, 5, 5, 5)])
def test_fsq_bound_gives_exactly_levels_values(levels):
    fsq = FiniteScalarQuantizer(len(levels), levels)
    sweep = torch.linspace(-20, 20, 4001).unsqueeze(1).expand(-1, len(levels))  # (4001, d)
    rounded = torch.round(fsq.bound(sweep))
    for i, level in enumerate(levels):
        assert sorted(rounded[:, i].unique().tolist()) == list(range(-(level // 2), level - level // 2))
        if level > 2:
            assert torch.round(fsq.bound(torch.zeros(1, len(levels))))[0, i] == 0


def test_fsq_uses_the_whole_codebook_and_has_no_loss():
    fsq = FiniteScalarQuantizer(3, (3, 4, 5))  # identity projections
    z = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = fsq(z)
    assert out.usage == 1 and out.loss == 0 and dict(fsq.named_parameters()) == {}
    assert fsq.state_dict() == {}


# --------------------------------------------------------------------------- precision, determinism


@pytest.mark.parametrize("name", ALL)
def test_autocast_bf16_computes_in_float32(name):
    quantizer = make(name).eval()
    z = make_z()
    reference = quantizer(z)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = quantizer(z)
        out_bf16 = quantizer(z.bfloat16())
        vectors = quantizer.codes_to_vectors(out.codes)
    assert out.quantized.dtype == torch.float32 and torch.equal(out.codes, reference.codes)
    torch.testing.assert_close(out.quantized, reference.quantized, rtol=0, atol=0)
    assert vectors.dtype == torch.float32
    assert out_bf16.quantized.dtype == torch.bfloat16 and out_bf16.loss.dtype == torch.float32
    assert torch.equal(out_bf16.codes, quantizer(z.bfloat16().float()).codes)


@pytest.mark.parametrize("name", ["ema", "reseed", "fsq"])
def test_module_cast_to_bf16_still_runs(name):
    quantizer = make(name).to(torch.bfloat16).train()
    out = quantizer(make_z().bfloat16())
    assert out.quantized.dtype == torch.bfloat16
    assert quantizer.codes_to_vectors(out.codes).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ALL)
def test_deterministic_under_manual_seed(name):
    def run():
        quantizer = make(name, seed=0).train()
        torch.manual_seed(7)
        for step in range(3):
            z = make_z(seed=step).requires_grad_()
            out = quantizer(z)
            (out.loss + out.quantized.sum()).backward()
        return out, quantizer.state_dict(), z.grad

    (out_a, state_a, grad_a), (out_b, state_b, grad_b) = run(), run()
    assert torch.equal(out_a.quantized, out_b.quantized) and torch.equal(out_a.codes, out_b.codes)
    assert torch.equal(grad_a, grad_b)
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# --------------------------------------------------------------------------- config


def test_config_json_round_trip_and_build():
    for name, config in CONFIGS.items():
        loaded = QuantizerConfig(**json.loads(json.dumps(dataclasses.asdict(config))))
        assert loaded == config and isinstance(loaded.fsq_levels, tuple)
        quantizer = build_quantizer(loaded, C)
        assert quantizer.codebook_size == config.codebook_size
        assert isinstance(quantizer, FiniteScalarQuantizer if name == "fsq" else VectorQuantizer)
    assert QuantizerConfig(kind="fsq").codebook_size == 1000  # derived from the levels, always
    assert QuantizerConfig(kind="fsq", codebook_size=7, fsq_levels=[4, 4]).codebook_size == 16


def test_factorised_projections():
    assert isinstance(make("l2").in_proj, torch.nn.Identity)
    factorised = make("factorised")
    assert factorised.in_proj.weight.shape == (4, C, 1, 1)
    assert factorised.out_proj.weight.shape == (C, 4, 1, 1)
    assert factorised.codebook.shape == (K, 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "lfq"},
        {"codebook_size": 0},
        {"code_dim": -1},
        {"kind": "fsq", "fsq_levels": (8, 1)},
        {"fsq_levels": ()},
        {"ema_decay": 1.0},
        {"beta": -0.1},
        {"reseed_every": 0},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        QuantizerConfig(**kwargs)


def test_wrong_input_shapes_raise():
    quantizer = make("plain")
    with pytest.raises(ValueError):
        quantizer(torch.randn(2, C + 1, 4, 4))
    with pytest.raises(ValueError):
        quantizer.codes_to_vectors(torch.zeros(2, 16, dtype=torch.long))


# --------------------------------------------------------------------------- torch.distributed


def _distributed_worker(rank: int, world_size: int, store_path: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        results = {}
        for name, config in [
            ("ema", CONFIGS["ema"]),
            ("all", dataclasses.replace(CONFIGS["reseed"], ema=True, kmeans_init=True)),
        ]:
            torch.manual_seed(0)
            quantizer = build_quantizer(config, C).train()
            torch.manual_seed(100 + rank)  # different random choices on each process
            for step in range(3):
                quantizer(make_z(seed=10 * step + rank))
            results[name] = quantizer.state_dict()
        torch.save(results, f"{result_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or sys.platform != "linux", reason="needs gloo and fork")
def test_distributed_replicas_stay_identical(tmp_path):
    world_size = 2
    context = mp.start_processes(
        _distributed_worker,
        args=(world_size, str(tmp_path / "store"), str(tmp_path / "result")),
        nprocs=world_size,
        start_method="fork",
        join=False,
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("distributed workers did not finish in 120 s")
    states = [torch.load(f"{tmp_path / 'result'}.{rank}") for rank in range(world_size)]
    for name in ("ema", "all"):
        assert all(torch.equal(states[0][name][k], states[1][name][k]) for k in states[0][name])
    # EMA statistics over two processes equal one process seeing both halves of the batch.
    torch.manual_seed(0)
    single = build_quantizer(CONFIGS["ema"], C).train()
    for step in range(3):
        single(torch.cat([make_z(seed=10 * step + rank) for rank in range(world_size)]))
    for key, value in single.state_dict().items():
        torch.testing.assert_close(states[0]["ema"][key], value)
