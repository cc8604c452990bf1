"""Both priors on a CUDA device in bfloat16 (skipped without one; ``benchmarks/gpu_check.sh`` runs them)."""

import pytest
import torch

from tests.prior.test_priors import KINDS, make_codes, make_context, make_prior

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_training_step_gives_finite_gradients(kind):
    prior = make_prior(kind).cuda().train()
    context = make_context().to("cuda")
    drop_context = torch.tensor([True, False, False], device="cuda")  # the null context gets a gradient too
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output = prior.loss(make_codes().cuda(), context, drop_context=drop_context)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    for name, parameter in prior.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_sampling_is_seeded_and_in_range(kind):
    prior = make_prior(kind).to("cuda", torch.bfloat16)
    context = make_context().to("cuda", torch.bfloat16)

    def draw():
        return prior.sample(context, guidance_scale=2.0, generator=torch.Generator("cuda").manual_seed(0))

    first, second = draw(), draw()
    assert first.shape == (3, 4, 4) and first.device.type == "cuda"
    assert torch.equal(first, second)
    assert 0 <= int(first.min()) and int(first.max()) < prior.config.codebook_size


def test_kv_cache_matches_the_full_forward_on_cuda():
    prior = make_prior("autoregressive").cuda()
    context = make_context().to("cuda")
    codes = make_codes().cuda()
    with torch.inference_mode():
        full = prior(codes, context)  # (B, N, V), teacher-forced
        logits_fn = prior._cached_logits_fn(context)
        flat = codes.flatten(1)
        cached = torch.stack([logits_fn(flat[:, :t]) for t in range(16)], dim=1)  # (B, N, V)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)
