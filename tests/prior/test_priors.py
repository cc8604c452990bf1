"""Both priors on the tiny preset: shapes, masks, KV cache, guidance, null context, padding, save/load."""

import json

import pytest
import torch

from tessera.core.config import CheckpointMismatchError
from tessera.prior.autoregressive import AutoregressivePrior
from tessera.prior.config import PRIOR_PRESETS, prior_preset
from tessera.prior.context import TextContext
from tessera.prior.kinds import build_prior, load_prior
from tessera.prior.masked import MaskedPrior
from tessera.prior.transformer import KVCache

KINDS = ["autoregressive", "masked"]


def make_prior(kind: str, **overrides):
    """A tiny prior with a random (not zero) head, so its distributions are far from uniform."""
    torch.manual_seed(0)
    prior = build_prior(prior_preset("tiny", kind=kind, **overrides))
    torch.nn.init.normal_(prior.backbone.head.weight, std=2.0)
    return prior.eval()


def make_context(lengths=(3, 6, 1), length: int | None = None, seed: int = 1) -> TextContext:
    """Random hidden states; row i has lengths[i] real tokens, then padding filled with garbage."""
    generator = torch.Generator().manual_seed(seed)
    length = length or max(lengths)
    states = torch.randn(len(lengths), length, PRIOR_PRESETS["tiny"].context_dim, generator=generator)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)
    return TextContext(states, mask)


def make_codes(batch: int = 3, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, 16, (batch, 4, 4), generator=torch.Generator().manual_seed(seed))


def sample(prior, context, seed=0, **options):
    return prior.sample(context, generator=torch.Generator().manual_seed(seed), **options)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_losses_and_samples(kind):
    prior = make_prior(kind)
    codes, context = make_codes(), make_context()
    logits = prior(codes, context)
    assert logits.shape == (3, 16, 16)
    output = prior.loss(codes, context)
    assert output.loss.ndim == 0 and output.accuracy.ndim == 0 and 0 <= output.accuracy <= 1
    assert int(output.num_tokens) == (48 if kind == "autoregressive" else int(output.num_tokens))
    fresh = build_prior(prior_preset("tiny", kind=kind))  # zero-initialised head: uniform over the codebook
    assert fresh.loss(codes, context).loss.item() == pytest.approx(torch.log(torch.tensor(16.0)).item())
    codes_out = sample(prior, context, guidance_scale=2.0)
    assert codes_out.shape == (3, 4, 4) and codes_out.dtype == torch.long
    assert ((codes_out >= 0) & (codes_out < 16)).all()


def test_masked_loss_covers_the_masked_positions_only():
    prior = make_prior("masked")
    codes, context = make_codes(), make_context()
    masked = torch.zeros(3, 4, 4, dtype=torch.bool)
    masked[:, 0, :2] = True
    output = prior.loss(codes, context, masked_positions=masked)
    assert int(output.num_tokens) == 6
    changed = codes.clone()
    changed[:, 2:] = (changed[:, 2:] + 1) % 16  # unmasked positions: inputs change, so the loss does
    assert prior.loss(changed, context, masked_positions=masked).loss != output.loss
    masked_codes = codes.clone()
    masked_codes[masked] = (masked_codes[masked] + 5) % 16  # masked inputs are [MASK]: logits unchanged
    torch.testing.assert_close(prior(torch.where(masked, prior.mask_token_id, masked_codes), context),
                               prior(torch.where(masked, prior.mask_token_id, codes), context))
    torch.manual_seed(0)
    random_mask = prior.random_mask(2000)
    counts = random_mask.flatten(1).sum(1)
    assert counts.min() >= 1 and counts.max() <= 16
    assert counts.float().mean() / 16 == pytest.approx(2 / torch.pi, abs=0.03)  # E[cos(pi u / 2)] = 2/pi


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_are_clear_errors(kind):
    prior = make_prior(kind)
    context = make_context()
    with pytest.raises(ValueError, match="shape"):
        prior.loss(torch.zeros(3, 5, 4, dtype=torch.long), context)
    with pytest.raises(ValueError, match="must lie in"):
        prior.loss(torch.full((3, 4, 4), 16), context)
    with pytest.raises(ValueError, match="context width"):
        prior.loss(make_codes(), TextContext(torch.zeros(3, 2, 5), torch.ones(3, 2)))
    with pytest.raises(ValueError, match="batch"):
        prior.loss(make_codes(2), context)
    other = MaskedPrior if kind == "autoregressive" else AutoregressivePrior
    with pytest.raises(ValueError, match="kind"):
        other(prior.config)


@pytest.mark.parametrize("kind", KINDS)
def test_a_few_steps_reduce_the_loss(kind):
    prior = make_prior(kind)
    codes, context = make_codes(8), make_context((3, 6, 1, 2, 4, 5, 6, 2))
    masked = prior.random_mask(8) if kind == "masked" else None
    kwargs = {"masked_positions": masked} if kind == "masked" else {}
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = prior.loss(codes, context, **kwargs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_kv_cache_gives_the_full_forward_logits_and_codes():
    prior = make_prior("autoregressive")
    context = make_context()
    codes = sample(prior, context)
    full = prior(codes, context)  # (B, N, V), teacher-forced
    logits_fn = prior._cached_logits_fn(context)
    flat = codes.flatten(1)
    with torch.inference_mode():
        cached = torch.stack([logits_fn(flat[:, :t]) for t in range(16)], dim=1)  # (B, N, V)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    for options in ({}, {"guidance_scale": 3.0, "top_k": 8}, {"guidance_scale": 2.0, "top_p": 0.9,
                                                              "guidance_schedule": "cosine"}):
        assert torch.equal(sample(prior, context, use_cache=True, **options),
                           sample(prior, context, use_cache=False, **options))


def test_masked_cached_context_gives_the_full_forward_logits():
    prior = make_prior("masked")
    context = make_context()
    tokens = torch.where(make_codes() < 8, make_codes(seed=3), prior.mask_token_id)
    cache = KVCache(prior.config.num_layers, context.mask.shape[1] + 16)
    positions = torch.arange(16)
    prior.backbone(torch.zeros(3, 0, dtype=torch.long), positions[:0], context=context, cache=cache, causal=False)
    for _ in range(2):  # the grid is re-run after the same cached context
        cached = prior.backbone(tokens.flatten(1), positions, cache=cache, causal=False, commit=False)
        torch.testing.assert_close(cached, prior(tokens, context), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_the_output(kind):
    prior = make_prior(kind)
    short = make_context()
    longer = TextContext.cat([short, make_context((1,), length=9, seed=5)])  # pads the 3 rows to 9
    padded = TextContext(longer.hidden_states[:3].clone(), longer.mask[:3].clone())
    padded.hidden_states[~padded.mask] = 100.0  # garbage in the padding
    codes = make_codes()
    torch.testing.assert_close(prior(codes, padded), prior(codes, short), atol=1e-5, rtol=1e-5)
    assert torch.equal(sample(prior, padded, guidance_scale=2.0), sample(prior, short, guidance_scale=2.0))


@pytest.mark.parametrize("kind", KINDS)
def test_guidance_scale_1_is_conditional_sampling(kind):
    prior = make_prior(kind)
    context = make_context()
    conditional = sample(prior, context)
    for schedule in ("constant", "linear", "cosine"):
        assert torch.equal(sample(prior, context, guidance_scale=1.0, guidance_schedule=schedule,
                                  negative_context=make_context(seed=7)), conditional)
    # guidance through the doubled batch, with an unconditional half equal to the conditional one
    assert torch.equal(sample(prior, context, guidance_scale=3.0, negative_context=context), conditional)


@pytest.mark.parametrize("kind", KINDS)
def test_null_context_is_the_same_in_training_and_sampling(kind):
    prior = make_prior(kind, caption_dropout=0.5)
    codes, context = make_codes(4), make_context((3, 6, 1, 2))
    null = prior.null_context(4)
    assert null.hidden_states.shape == (4, 6, 8) and null.mask.all()

    def loss(**kwargs):
        torch.manual_seed(11)  # the masked prior draws its mask from torch's RNG
        return prior.loss(codes, **kwargs).loss

    torch.testing.assert_close(loss(context=context, drop_context=torch.ones(4, dtype=torch.bool)),
                               loss(context=null), atol=1e-6, rtol=1e-6)
    assert loss(context=context) == loss(context=context, drop_context=torch.zeros(4, dtype=torch.bool))  # eval
    prior.train()  # training mode, drop_context=None: rows drawn with probability caption_dropout
    torch.manual_seed(1)
    drawn = torch.rand(4) < 0.5
    assert 0 < drawn.sum() < 4
    torch.manual_seed(1)
    dropped = prior.condition(context)
    expected = prior.condition(context, drawn)
    assert torch.equal(dropped.hidden_states, expected.hidden_states) and torch.equal(dropped.mask, expected.mask)
    prior.eval()
    # CFG's unconditional half is the same null context; a negative prompt replaces it
    guided = sample(prior, context, guidance_scale=3.0)
    assert torch.equal(sample(prior, context, guidance_scale=3.0, negative_context=null), guided)
    negative = sample(prior, context, guidance_scale=3.0, negative_context=make_context((2, 2, 2, 2), seed=9))
    assert not torch.equal(negative, guided)
    single = make_context((2,), seed=9)  # a single negative prompt is broadcast over the batch
    assert torch.equal(sample(prior, context, guidance_scale=3.0, negative_context=single),
                       sample(prior, context, guidance_scale=3.0, negative_context=single.repeat_interleave(4)))


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_filters_and_generators(kind):
    prior = make_prior(kind)
    context = make_context()
    # the masked prior's re-masking noise also comes from the generator: off, to compare token choices
    options = {"choice_temperature": 0.0} if kind == "masked" else {}
    greedy = sample(prior, context, temperature=0.0, **options)
    assert torch.equal(sample(prior, context, top_k=1, seed=1, **options), greedy)
    assert torch.equal(sample(prior, context, top_p=1e-6, seed=2, **options), greedy)
    assert torch.equal(sample(prior, context, seed=5), sample(prior, context, seed=5))
    assert not torch.equal(sample(prior, context, seed=5), sample(prior, context, seed=6))
    with pytest.raises(ValueError, match="guidance schedule"):
        sample(prior, context, guidance_scale=2.0, guidance_schedule="sqrt")


def test_masked_sampling_keeps_the_given_positions():
    prior = make_prior("masked")
    context = make_context()
    given = make_codes(seed=4)
    initial_mask = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.4
    for num_steps in (1, 3, 16):
        codes = sample(prior, context, num_steps=num_steps, initial_codes=given, initial_mask=initial_mask)
        assert torch.equal(codes[initial_mask], given[initial_mask])
        assert ((codes >= 0) & (codes < 16)).all()
    everything = torch.ones(3, 4, 4, dtype=torch.bool)
    assert torch.equal(sample(prior, context, initial_codes=given, initial_mask=everything), given)
    with pytest.raises(ValueError, match="no initial_codes"):
        sample(prior, context, initial_mask=initial_mask)


def test_autoregressive_sampling_forces_the_given_codes_in_raster_order():
    prior = make_prior("autoregressive")
    context = make_context()
    given = make_codes(seed=4)
    initial_mask = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.4
    initial_mask[0, :2] = True  # a run of given codes: fed to the KV cache in one call
    for options in ({}, {"guidance_scale": 2.5, "top_k": 8}):
        cached = sample(prior, context, initial_codes=given, initial_mask=initial_mask, **options)
        full = sample(prior, context, initial_codes=given, initial_mask=initial_mask, use_cache=False, **options)
        assert torch.equal(cached, full) and torch.equal(cached[initial_mask], given[initial_mask])
    # the codes before the first unknown one are all the prior conditions on there: greedy sampling of the
    # first unknown code of row 0 (raster position 8) equals greedy decoding after the same prefix
    greedy = sample(prior, context, temperature=0.0, initial_codes=given, initial_mask=initial_mask)
    logits = prior(greedy, context)  # (B, N, V) teacher-forced
    first_unknown = (~initial_mask[0]).flatten().nonzero()[0, 0]
    assert greedy[0].flatten()[first_unknown] == logits[0, first_unknown].argmax()
    nothing_given = torch.zeros(3, 4, 4, dtype=torch.bool)
    assert torch.equal(sample(prior, context, initial_codes=given, initial_mask=nothing_given), sample(prior, context))
    everything = torch.ones(3, 4, 4, dtype=torch.bool)
    assert torch.equal(sample(prior, context, initial_codes=given, initial_mask=everything), given)
    with pytest.raises(ValueError, match="no initial_codes"):
        sample(prior, context, initial_mask=initial_mask)


@pytest.mark.parametrize("kind", KINDS)
def test_code_log_probs(kind):
    prior = make_prior(kind)
    context, codes = make_context(), make_codes()
    scores = prior.code_log_probs(codes, context)
    assert scores.shape == (3, 4, 4) and (scores <= 0).all() and not scores.is_inference()
    if kind == "autoregressive":
        expected = prior(codes, context).log_softmax(-1).gather(-1, codes.flatten(1)[..., None])[..., 0]
    else:  # group_stride = grid_size: one code masked at a time (pseudo-likelihood)
        scores = prior.code_log_probs(codes, context, group_stride=4)
        flat = codes.flatten(1)
        expected = torch.stack([prior(flat.index_fill(1, torch.tensor([i]), prior.mask_token_id).view(3, 4, 4),
                                      context)[:, i].log_softmax(-1).gather(-1, flat[:, i:i + 1])[:, 0]
                                for i in range(16)], dim=1)
        everything_masked = prior(torch.full_like(codes, prior.mask_token_id), context).log_softmax(-1)
        torch.testing.assert_close(prior.code_log_probs(codes, context, group_stride=1).flatten(1),
                                   everything_masked.gather(-1, flat[..., None])[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.flatten(1), expected, atol=1e-5, rtol=1e-5)
    # guided scores use the same combination as guided sampling: scale 1 with any negative is unguided
    torch.testing.assert_close(prior.code_log_probs(codes, context, guidance_scale=1.0,
                                                    negative_context=make_context(seed=7)),
                               prior.code_log_probs(codes, context))
    assert not torch.allclose(prior.code_log_probs(codes, context, guidance_scale=3.0),
                              prior.code_log_probs(codes, context))


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_restores_the_mode_and_returns_ordinary_tensors(kind):
    prior = make_prior(kind).train()
    codes = sample(prior, make_context())
    assert prior.training and not codes.is_inference()
    prior.loss(codes, make_context()).loss.backward()  # sampled codes can be training targets


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    prior = make_prior(kind)
    codes, context = make_codes(), make_context()
    prior.save_pretrained(tmp_path / "prior")
    assert json.loads((tmp_path / "prior" / "config.json").read_text())["kind"] == kind
    loaded = load_prior(tmp_path / "prior")
    assert type(loaded) is type(prior) and loaded.config == prior.config and not loaded.training
    assert torch.equal(loaded(codes, context), prior(codes, context))
    assert torch.equal(sample(loaded, context, guidance_scale=2.0), sample(prior, context, guidance_scale=2.0))
    other = MaskedPrior if kind == "autoregressive" else AutoregressivePrior
    with pytest.raises(ValueError, match="kind"):
        other.from_pretrained(tmp_path / "prior")


def test_strict_loading(tmp_path):
    prior = make_prior("masked")
    prior.save_pretrained(tmp_path / "extra_key")
    config = json.loads((tmp_path / "extra_key" / "config.json").read_text())
    (tmp_path / "extra_key" / "config.json").write_text(json.dumps(config | {"rope": True}))
    with pytest.raises(CheckpointMismatchError, match="unknown keys"):
        load_prior(tmp_path / "extra_key")
    prior.save_pretrained(tmp_path / "wider")
    (tmp_path / "wider" / "config.json").write_text(json.dumps(config | {"hidden_size": 32}))
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        load_prior(tmp_path / "wider")
    with pytest.raises(FileNotFoundError):
        load_prior(tmp_path / "missing")


def test_configs_saved_before_mlp_activation_keep_the_tanh_gelu(tmp_path):
    prior = make_prior("masked")
    assert prior.config.mlp_activation == "gelu"  # the presets use exact GELU
    prior.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["mlp_activation"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = load_prior(tmp_path / "old")
    assert old.config.mlp_activation == "gelu_tanh"
    codes, context = make_codes(), make_context()
    exact, approximate = prior(codes, context), old(codes, context)
    assert not torch.equal(exact, approximate)
    torch.testing.assert_close(exact, approximate, atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="mlp_activation"):
        prior_preset("tiny", mlp_activation="relu")


def test_chained_code_log_probs_are_a_joint_likelihood_of_the_grid():
    """A tiny masked prior learns 2x2 grids of one repeated code (out of 3), so each code is predictable from
    the others. Over all 81 grids, the chained scores of each grid sum to a distribution (total 1) for any
    stride; the pseudo-likelihood (each code given all the others) does not (it gives each constant grid ~1)."""
    torch.manual_seed(0)
    prior = build_prior(prior_preset("tiny", kind="masked", grid_size=2, codebook_size=3, caption_dropout=0.0))
    constant = torch.arange(3).repeat_interleave(4).view(3, 2, 2)
    context = make_context(lengths=(3,))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        prior.loss(constant.repeat(4, 1, 1), TextContext(context.hidden_states.expand(12, -1, -1),
                                                         context.mask.expand(12, -1))).loss.backward()
        optimizer.step()
    prior.eval()
    grids = torch.cartesian_prod(*[torch.arange(3)] * 4).view(81, 2, 2)
    context = TextContext(context.hidden_states.expand(81, -1, -1), context.mask.expand(81, -1))
    for stride in (1, 2):
        joint = prior.code_log_probs(grids, context, group_stride=stride, chain=True).flatten(1).sum(1)
        torch.testing.assert_close(joint.exp().sum(), torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(prior.code_log_probs(grids, context, chain=True), prior.code_log_probs(grids, context))
    pseudo = prior.code_log_probs(grids, context, group_stride=2).flatten(1).sum(1)
    assert float(pseudo.exp().sum()) > 1.5
