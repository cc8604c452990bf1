import json

import pytest
import torch

from tessera.core.config import CheckpointMismatchError
from tessera.tokenizer.config import VQGAN_PRESETS, VQGANConfig, vqgan_preset
from tessera.tokenizer.model import VQGAN


@pytest.fixture
def tiny() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(vqgan_preset("tiny")).eval()


def images(config: VQGANConfig, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, config.resolution, config.resolution) * 2 - 1


@pytest.mark.parametrize("kind", ["vq", "fsq"])
def test_encode_decode_shapes(kind):
    config = vqgan_preset("tiny")
    config.quantizer.kind = kind
    if kind == "fsq":
        config.quantizer.fsq_levels = (4, 4)
        config.quantizer.codebook_size = 16
    model = VQGAN(config).eval()
    x = images(config)
    codes = model.encode(x)
    assert codes.shape == (2, config.latent_size, config.latent_size) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < model.codebook_size
    decoded = model.decode(codes)
    assert decoded.shape == x.shape and decoded.abs().max() <= 1
    output = model(x)
    assert output.reconstruction.shape == x.shape
    assert torch.equal(output.codes, codes)


def test_codes_vectors_round_trip(tiny):
    x = images(tiny.config)
    codes = tiny.encode(x)
    assert torch.equal(tiny.vectors_to_codes(tiny.encoder(x)), codes)
    vectors = tiny.codes_to_vectors(codes)
    assert vectors.shape == (2, tiny.config.z_channels, *codes.shape[1:])
    # decode(codes) is the decoder applied to exactly the forward pass's quantised vectors
    output = tiny(images(tiny.config))
    torch.testing.assert_close(tiny.decode(output.codes), output.reconstruction.clamp(-1, 1))


def test_bad_inputs_are_clear_errors(tiny):
    with pytest.raises(ValueError, match="expected images of shape"):
        tiny.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="codes must lie in"):
        tiny.decode(torch.full((1, 4, 4), tiny.codebook_size))


def test_save_load_identical(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["quantizer"]["codebook_size"] == 16
    loaded = VQGAN.from_pretrained(tmp_path)
    x = images(tiny.config)
    assert torch.equal(loaded.encode(x), tiny.encode(x))
    torch.testing.assert_close(loaded(x).reconstruction, tiny(x).reconstruction, rtol=0, atol=0)


def test_strict_loading(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["ch"] = 16  # the weights no longer fit the config
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        VQGAN.from_pretrained(tmp_path)
    config["ch"], config["not_a_field"] = 8, 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="unknown keys"):
        VQGAN.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        VQGAN.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("name", sorted(VQGAN_PRESETS))
def test_presets_build(name):
    config = vqgan_preset(name)
    assert config.resolution // config.downsample_factor == config.latent_size
    if name in ("tiny", "cpu-32", "cpu-64"):
        model = VQGAN(config).eval()
        with torch.no_grad():
            codes = model.encode(images(config, 1))
            assert model.decode(codes).shape == (1, 3, config.resolution, config.resolution)
        assert codes.shape == (1, config.latent_size, config.latent_size)


def test_cpu_64_maps_64x64_images_to_a_16x16_grid():
    config = vqgan_preset("cpu-64")
    assert (config.resolution, config.latent_size) == (64, 16)


def test_taming_key_names(tiny):
    keys = set(tiny.state_dict())
    assert "encoder.down.0.block.0.conv1.weight" in keys
    assert "encoder.down.0.downsample.conv.weight" in keys
    assert "decoder.up.1.upsample.conv.weight" in keys
    assert "encoder.mid.attn_1.q.weight" in keys and "decoder.conv_out.weight" in keys


def test_options_for_imported_models_default_to_the_original_model(tiny):
    config = vqgan_preset("tiny")
    assert config.mid_attention and config.pixel_range == (-1, 1) and not config.quantizer.always_project
    old_json = {key: value for key, value in config.to_dict().items() if key not in ("mid_attention", "pixel_range")}
    del old_json["quantizer"]["always_project"]
    assert VQGANConfig.from_dict(old_json) == config  # a config written before the options existed
    assert set(VQGAN(config).state_dict()) == set(tiny.state_dict())


def test_no_mid_attention_and_always_on_projections():
    config = vqgan_preset("tiny").replace(mid_attention=False)
    config.quantizer.code_dim = config.z_channels
    config.quantizer.always_project = True
    keys = set(VQGAN(config).state_dict())
    assert not any(".mid.attn_1." in key for key in keys)
    assert {"quantizer.in_proj.weight", "quantizer.out_proj.weight"} <= keys
    config.quantizer.always_project = False
    assert "quantizer.in_proj.weight" not in set(VQGAN(config).state_dict())


def test_pixel_range_is_handled_at_the_models_edge(tiny):
    config = tiny.config.replace(pixel_range=(0, 1))
    zero_one = VQGAN(config).eval()
    zero_one.load_state_dict(tiny.state_dict())
    x = images(config)
    assert torch.equal(zero_one.encode(x), tiny.quantizer.vectors_to_codes(tiny.encoder((x + 1) / 2)))
    codes = zero_one.encode(x)
    raw = tiny.decoder(tiny.codes_to_vectors(codes))  # what the network gives, in [0, 1]
    torch.testing.assert_close(zero_one.decode(codes), (raw * 2 - 1).clamp(-1, 1))
    torch.testing.assert_close(zero_one(x).reconstruction, tiny((x + 1) / 2).reconstruction * 2 - 1)
    with pytest.raises(ValueError, match="pixel_range"):
        tiny.config.replace(pixel_range=(0, 255))
