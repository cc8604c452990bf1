"""The sampling functions on hand-made logits: filters, guidance, schedules, and both decoding loops."""

import math

import pytest
import torch

from tessera.prior.sampling import (
    autoregressive_decode,
    cosine_mask_ratio,
    filter_logits,
    guidance_scale_at,
    guided_logits,
    masked_decode,
    sample_from_logits,
)

INF = math.inf
PROBS = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (0), 0.05 (2)


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


def test_temperature_scales_and_zero_leaves_logits():
    logits = torch.tensor([1.0, -2.0, 4.0])
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2)
    torch.testing.assert_close(filter_logits(logits, temperature=0.0), logits)
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(logits, temperature=-1.0)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    out = filter_logits(logits, top_k=2)
    assert torch.equal(torch.isfinite(out), torch.tensor([[False, True, True, False], [False, False, True, True]]))
    torch.testing.assert_close(out[0, 1:3], logits[0, 1:3])
    assert torch.equal(filter_logits(logits, top_k=10), logits)  # k >= V: nothing removed
    assert torch.equal(filter_logits(logits, top_k=0), filter_logits(logits, top_k=None))  # 0 = off, as everywhere
    with pytest.raises(ValueError, match="top_k"):
        filter_logits(logits, top_k=-1)


@pytest.mark.parametrize("top_p, expected", [(0.4, [1]), (0.7, [1, 3]), (0.9, [0, 1, 3]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    assert kept(filter_logits(PROBS.log(), top_p=top_p)) == expected
    with pytest.raises(ValueError, match="top_p"):
        filter_logits(PROBS.log(), top_p=0.0)


def test_top_p_applies_after_temperature():
    # at temperature 0.5 the probabilities sharpen to ~[0.06, 0.68, 0.01, 0.25]: one token reaches 0.6
    assert kept(filter_logits(PROBS.log(), top_p=0.6)) == [1, 3]
    assert kept(filter_logits(PROBS.log(), temperature=0.5, top_p=0.6)) == [1]


def test_sample_from_logits_respects_filters_and_generator():
    logits = PROBS.log().expand(2, 3, 4)  # (2, 3, V): any leading shape
    tokens, probs = sample_from_logits(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == probs.shape == (2, 3)
    many, _ = sample_from_logits(PROBS.log().expand(2000, 4), top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(many.tolist()) == {1, 3}
    assert 0.55 < (many == 1).float().mean() < 0.70  # 0.5 / 0.8 = 0.625
    torch.testing.assert_close(probs, PROBS[tokens])  # the model's probabilities, before filtering
    again, _ = sample_from_logits(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, again)


def test_greedy_top_k_1_and_tiny_top_p_agree():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    greedy, greedy_probs = sample_from_logits(logits, temperature=0.0)
    assert torch.equal(greedy, logits.argmax(-1))
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        tokens, probs = sample_from_logits(logits, generator=torch.Generator().manual_seed(2), **options)
        assert torch.equal(tokens, greedy)
        torch.testing.assert_close(probs, greedy_probs)


def test_guided_logits_formula():
    cond, uncond = torch.tensor([2.0, 1.0, 0.0]), torch.tensor([3.0, 0.0, 0.0])
    assert guided_logits(cond, uncond, 1.0) is cond
    torch.testing.assert_close(guided_logits(cond, uncond, 3.0), torch.tensor([0.0, 3.0, 0.0]))
    torch.testing.assert_close(guided_logits(cond, uncond, 0.0), uncond)


def test_guidance_schedules():
    assert guidance_scale_at("constant", 4.0, 0.3) == 4.0
    assert guidance_scale_at("linear", 4.0, 0.0) == 1.0 and guidance_scale_at("linear", 4.0, 1.0) == 4.0
    assert guidance_scale_at("linear", 4.0, 0.5) == pytest.approx(2.5)
    assert guidance_scale_at("cosine", 4.0, 0.0) == 1.0 and guidance_scale_at("cosine", 4.0, 1.0) == 4.0
    assert guidance_scale_at("cosine", 4.0, 0.25) == pytest.approx(1 + 3 * (1 - math.sqrt(0.5)) / 2)
    for schedule in ("constant", "linear", "cosine"):
        assert all(guidance_scale_at(schedule, 1.0, p) == 1.0 for p in (0.0, 0.4, 1.0))
    with pytest.raises(ValueError, match="guidance schedule"):
        guidance_scale_at("exponential", 2.0, 0.5)


def test_cosine_mask_ratio():
    assert cosine_mask_ratio(0.0) == 1.0
    assert cosine_mask_ratio(1.0) == pytest.approx(0.0, abs=1e-12)
    assert cosine_mask_ratio(0.5) == pytest.approx(math.sqrt(0.5))
    torch.testing.assert_close(cosine_mask_ratio(torch.tensor([0.0, 0.5])), torch.tensor([1.0, math.sqrt(0.5)]))


def test_autoregressive_decode_feeds_the_prefix_and_guides():
    prefixes = []

    def logits_fn(prefix):  # (B', t) -> (B', V): cond rows favour 0, uncond rows favour 0 more strongly
        prefixes.append(prefix.clone())
        batch = prefix.shape[0] // 2
        logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(batch, 1)
        return torch.cat([logits, torch.tensor([[3.0, 0.0, 0.0]]).repeat(batch, 1)])

    tokens = autoregressive_decode(logits_fn, batch_size=2, num_tokens=3, guidance_scale=3.0, temperature=0.0)
    assert tokens.tolist() == [[1, 1, 1], [1, 1, 1]]  # guidance moves the argmax from 0 to 1
    assert [p.shape for p in prefixes] == [(4, 0), (4, 1), (4, 2)]
    assert torch.equal(prefixes[2][:2], prefixes[2][2:])  # the same prefix for both halves

    def counting_fn(prefix):  # the next token is t + 1 (mod V), given the prefix
        logits = torch.zeros(prefix.shape[0], 5)
        logits[:, (prefix.shape[1] + 1) % 5] = 50.0
        return logits

    tokens = autoregressive_decode(counting_fn, batch_size=1, num_tokens=6, generator=torch.Generator())
    assert tokens.tolist() == [[1, 2, 3, 4, 0, 1]]


def test_autoregressive_decode_forces_known_tokens_and_skips_known_steps():
    prefixes = []

    def counting_fn(prefix):  # the next token is (last token + 1) mod V
        prefixes.append(prefix.clone())
        logits = torch.zeros(prefix.shape[0], 5)
        last = prefix[:, -1] if prefix.shape[1] else torch.zeros(prefix.shape[0], dtype=torch.long)
        logits[torch.arange(prefix.shape[0]), (last + 1) % 5] = 50.0
        return logits

    initial = torch.tensor([[3, 0, 0, 0, 0, 0], [3, 4, 0, 0, 0, 0]])
    known = torch.tensor([[True, False, False, False, False, True],
                          [True, True, False, False, False, False]])
    tokens = autoregressive_decode(counting_fn, batch_size=2, num_tokens=6, initial_tokens=initial,
                                   initial_known_mask=known, generator=torch.Generator())
    assert tokens.tolist() == [[3, 4, 0, 1, 2, 0], [3, 4, 0, 1, 2, 3]]  # row 0's last token forced to 0
    assert [p.shape[1] for p in prefixes] == [1, 2, 3, 4, 5]  # step 0 is known in every row: not called
    with pytest.raises(ValueError, match="known mask"):
        autoregressive_decode(counting_fn, batch_size=2, num_tokens=5, initial_tokens=initial,
                              initial_known_mask=known)


def confident_logits_fn(calls, vocabulary=4):
    """Position i predicts code i % V, with confidence growing with i."""

    def logits_fn(tokens):  # (B, N) -> (B, N, V)
        calls.append(tokens.clone())
        batch, length = tokens.shape
        codes = torch.arange(length) % vocabulary
        logits = torch.nn.functional.one_hot(codes, vocabulary).float() * torch.linspace(1, 8, length)[:, None]
        return logits.expand(batch, length, vocabulary)

    return logits_fn


def test_masked_decode_follows_the_cosine_schedule_and_confidence():
    calls = []
    tokens = masked_decode(confident_logits_fn(calls), initial_tokens=torch.zeros(1, 16, dtype=torch.long),
                           initial_known_mask=torch.zeros(1, 16, dtype=torch.bool), num_steps=4,
                           mask_token_id=4, temperature=0.0, choice_temperature=0.0)
    assert tokens.tolist() == [[i % 4 for i in range(16)]]
    masked_counts = [int((call == 4).sum()) for call in calls]
    assert masked_counts == [16, 14, 11, 6]  # floor(16 * cos(pi/2 * k/4)), k = 0..3
    assert torch.equal(calls[1][0] == 4, torch.arange(16) < 14)  # the most confident (last) revealed first


def test_masked_decode_keeps_known_positions_and_reveals_all():
    generator = torch.Generator().manual_seed(0)
    known = torch.rand(3, 16, generator=generator) < 0.5
    initial = torch.full((3, 16), 3)
    for num_steps in (1, 2, 5, 20):
        calls = []
        tokens = masked_decode(confident_logits_fn(calls), initial_tokens=initial, initial_known_mask=known,
                               num_steps=num_steps, mask_token_id=4, generator=generator)
        assert torch.equal(tokens[known], initial[known])
        assert ((tokens >= 0) & (tokens < 4)).all()
        assert all(torch.equal(call[known], initial[known]) for call in calls)
        assert len(calls) <= min(num_steps, 16)
    calls = []
    everything = torch.ones(3, 16, dtype=torch.bool)
    assert torch.equal(masked_decode(confident_logits_fn(calls), initial_tokens=initial,
                                     initial_known_mask=everything, num_steps=4, mask_token_id=4), initial)
    assert calls == []
    with pytest.raises(ValueError, match="num_steps"):
        masked_decode(confident_logits_fn([]), initial_tokens=initial, initial_known_mask=known, num_steps=0,
                      mask_token_id=4)
