"""diffusers ``VQModel`` <-> Tessera VQ-GAN, checked against diffusers' own code with seeded random weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tessera.tokenizer.config import QuantizerConfig, VQGANConfig
from tessera.tokenizer.convert import UnsupportedCheckpointError, convert_checkpoint, export_to_diffusers
from tessera.tokenizer.model import VQGAN
from tests.tokenizer.reference_models import agreement, perturb_, random_images

diffusers = pytest.importorskip("diffusers")

RESOLUTION = 16


def tiny_vqmodel(seed: int = 0, **changes) -> diffusers.VQModel:
    options = dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(16, 32), layers_per_block=1,
        latent_channels=8, num_vq_embeddings=64, vq_embed_dim=4, norm_num_groups=8, sample_size=RESOLUTION,
    )
    return perturb_(diffusers.VQModel(**(options | changes)), seed)


def reference_codes(model: diffusers.VQModel, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        _, _, (_, _, indices) = model.quantize(model.encode(images).latents)
    side = images.shape[-1] // 2 ** (len(model.config.block_out_channels) - 1)
    return indices.reshape(images.shape[0], side, side)  # (B, h, w)


def reference_decoder(model: diffusers.VQModel, scale_to_tessera=lambda pixels: pixels):
    def decode(codes: torch.Tensor) -> torch.Tensor:
        batch, height, width = codes.shape
        with torch.no_grad():
            vectors = model.quantize.get_codebook_entry(codes.reshape(-1), (batch, height, width,
                                                                            model.config.vq_embed_dim))
            return scale_to_tessera(model.decode(vectors, force_not_quantize=True).sample)
    return decode


@pytest.mark.parametrize("mid_attention", [True, False])
def test_diffusers_import_gives_the_same_codes_and_pixels(tmp_path, mid_attention):
    reference = tiny_vqmodel(mid_block_add_attention=mid_attention)
    reference.save_pretrained(tmp_path / "reference")
    report = convert_checkpoint("diffusers", tmp_path / "reference", tmp_path / "tessera")
    ours = VQGAN.from_pretrained(tmp_path / "tessera")
    assert ours.config.mid_attention == mid_attention and ours.config.quantizer.always_project
    assert report.num_parameters == sum(p.numel() for p in reference.parameters())
    images = random_images(RESOLUTION)
    result = agreement(ours, reference_codes(reference, images), reference_decoder(reference), images)
    result.check()
    assert len(ours.encode(images).unique()) > 8  # the comparison covers many codes


def test_amused_pipeline_folder_works_in_zero_one_pixels(tmp_path):
    """aMUSEd's VQ takes and gives [0, 1] pixels; Tessera's callers still pass and get [-1, 1]."""
    reference = tiny_vqmodel(seed=1, mid_block_add_attention=False)
    reference.save_pretrained(tmp_path / "amused" / "vqvae")
    (tmp_path / "amused" / "model_index.json").write_text(json.dumps({"_class_name": "AmusedPipeline"}))
    report = convert_checkpoint("diffusers", tmp_path / "amused", tmp_path / "tessera")
    ours = VQGAN.from_pretrained(tmp_path / "tessera")
    assert ours.config.pixel_range == (0, 1) and any("aMUSEd" in note for note in report.notes)
    images = random_images(RESOLUTION)
    codes = reference_codes(reference, (images + 1) / 2)
    agreement(ours, codes, reference_decoder(reference, lambda pixels: pixels * 2 - 1), images).check()


def test_old_diffusers_attention_names_are_read(tmp_path):
    reference = tiny_vqmodel()
    reference.save_pretrained(tmp_path / "reference")
    weights = tmp_path / "reference" / "diffusion_pytorch_model.safetensors"
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, tensor in load_file(weights).items():
        for new, old in old_names.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        state[key] = tensor
    save_file(state, weights)
    convert_checkpoint("diffusers", tmp_path / "reference", tmp_path / "tessera")
    images = random_images(RESOLUTION)
    agreement(VQGAN.from_pretrained(tmp_path / "tessera"), reference_codes(reference, images),
              reference_decoder(reference), images).check()


def test_export_round_trip_is_exact(tmp_path):
    reference = tiny_vqmodel()
    reference.save_pretrained(tmp_path / "reference")
    convert_checkpoint("diffusers", tmp_path / "reference", tmp_path / "tessera")
    export_to_diffusers(tmp_path / "tessera", tmp_path / "exported")
    exported = diffusers.VQModel.from_pretrained(tmp_path / "exported")
    original = reference.state_dict()
    assert set(exported.state_dict()) == set(original)
    for key, tensor in exported.state_dict().items():
        assert torch.equal(tensor, original[key]), key


@pytest.mark.parametrize("l2_normalize", [True, False])
def test_export_loads_in_diffusers_with_the_same_codes_and_pixels(tmp_path, l2_normalize):
    """Per-level block counts (padded with identity blocks), an l2 codebook and Identity projections export."""
    config = VQGANConfig(resolution=RESOLUTION, ch=16, ch_mult=(1, 2), num_res_blocks=(1, 2), attn_resolutions=(8,),
                         z_channels=8, norm_groups=8,
                         quantizer=QuantizerConfig(codebook_size=64, code_dim=8 if l2_normalize else 4,
                                                   l2_normalize=l2_normalize))
    torch.manual_seed(0)
    tessera = perturb_(VQGAN(config), seed=2)
    assert ("quantizer.in_proj.weight" in tessera.state_dict()) != l2_normalize  # Identity when code_dim == z
    tessera.save_pretrained(tmp_path / "tessera")
    report = export_to_diffusers(tmp_path / "tessera", tmp_path / "exported")
    assert any("padded" in note for note in report.notes)
    exported = diffusers.VQModel.from_pretrained(tmp_path / "exported").eval()
    images = random_images(RESOLUTION)
    agreement(tessera, reference_codes(exported, images), reference_decoder(exported), images).check()


def test_unsupported_diffusers_models_are_refused(tmp_path):
    tiny_vqmodel().save_pretrained(tmp_path / "movq")  # MoVQ's own norms need 32 groups: its config says it
    config_file = tmp_path / "movq" / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"norm_type": "spatial"}))
    with pytest.raises(UnsupportedCheckpointError, match="spatial normalisation"):
        convert_checkpoint("diffusers", tmp_path / "movq", tmp_path / "out")
    config = VQGANConfig(resolution=RESOLUTION, ch=8, ch_mult=(2, 2), z_channels=8, norm_groups=8)
    VQGAN(config).save_pretrained(tmp_path / "wide_first")
    with pytest.raises(UnsupportedCheckpointError, match=r"ch_mult\[0\] == 1"):
        export_to_diffusers(tmp_path / "wide_first", tmp_path / "out")
    config = config.replace(ch_mult=(1, 2), quantizer=QuantizerConfig(kind="fsq", fsq_levels=(4, 4)))
    VQGAN(config).save_pretrained(tmp_path / "fsq")
    with pytest.raises(UnsupportedCheckpointError, match="fsq"):
        export_to_diffusers(tmp_path / "fsq", tmp_path / "out")
