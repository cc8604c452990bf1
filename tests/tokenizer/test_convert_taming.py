"""taming-transformers ``VQModel`` -> Tessera VQ-GAN, checked against taming's own modules with seeded random
weights, read from a Lightning-style checkpoint through the safe loader."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tessera.pipelines.cli import main as tessera
from tessera.pipelines.cli.tools import CONVERT_SOURCES
from tessera.tokenizer.convert import SOURCES, ConversionError, UnsupportedCheckpointError, convert_checkpoint
from tessera.tokenizer.model import VQGAN
from tests.tokenizer.reference_models import agreement, perturb_, random_images

taming_model = pytest.importorskip("taming.modules.diffusionmodules.model")
taming_quantize = pytest.importorskip("taming.modules.vqvae.quantize")

RESOLUTION = 16
DDCONFIG = dict(ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[8], in_channels=3,
                resolution=RESOLUTION, z_channels=32, double_z=False, dropout=0.0)  # taming's norms need 32 groups


class TamingVQ(nn.Module):
    """The modules of taming's ``VQModel`` under its attribute names (its class imports Lightning)."""

    def __init__(self, n_embed: int = 64, embed_dim: int = 8):
        super().__init__()
        self.encoder = taming_model.Encoder(**DDCONFIG)
        self.decoder = taming_model.Decoder(**DDCONFIG)
        self.quantize = taming_quantize.VectorQuantizer(n_embed, embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(DDCONFIG["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, DDCONFIG["z_channels"], 1)

    @torch.no_grad()
    def codes(self, images: torch.Tensor) -> torch.Tensor:
        _, _, (_, _, indices) = self.quantize(self.quant_conv(self.encoder(images)))
        side = images.shape[-1] // 2
        return indices.reshape(images.shape[0], side, side)  # (B, h, w)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        vectors = self.quantize.get_codebook_entry(codes.reshape(-1), (*codes.shape, self.quantize.e_dim))
        return self.decoder(self.post_quant_conv(vectors))


@pytest.fixture(scope="module")
def reference() -> TamingVQ:
    torch.manual_seed(0)
    return perturb_(TamingVQ(), seed=0)


def lightning_checkpoint(reference: TamingVQ, path, monkeypatch, **extra) -> None:
    """A checkpoint as PyTorch Lightning 1.x writes it for taming: the weights (with the training loss's) under
    "state_dict", beside training bookkeeping that includes Lightning's ModelCheckpoint class as a key. The
    class is a stand-in in a fake ``pytorch_lightning`` module that exists only while saving."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = model_checkpoint
    state = dict(reference.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(8, 3, 3, 3)
    state["loss.logvar"] = torch.zeros(())
    checkpoint = {
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.0.8", "state_dict": state,
        "callbacks": {model_checkpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0, 1]}]}],
        "lr_schedulers": [], **extra,
    }
    torch.save(checkpoint, path)
    for name in names:
        monkeypatch.delitem(sys.modules, name)  # loading must not need Lightning


def test_taming_lightning_checkpoint_gives_the_same_codes_and_pixels(tmp_path, reference, monkeypatch):
    lightning_checkpoint(reference, tmp_path / "last.ckpt", monkeypatch)
    report = convert_checkpoint("taming", tmp_path / "last.ckpt", tmp_path / "tessera", resolution=RESOLUTION)
    assert report.dropped == {"training loss (discriminator, LPIPS)": 3}
    ours = VQGAN.from_pretrained(tmp_path / "tessera")
    assert ours.config.attn_resolutions == (8,) and not ours.config.quantizer.l2_normalize
    images = random_images(RESOLUTION)
    agreement(ours, reference.codes(images), reference.decode_codes, images).check()
    assert len(ours.encode(images).unique()) > 8


def test_tessera_convert_command_prints_what_it_did(tmp_path, reference, monkeypatch, capsys):
    assert CONVERT_SOURCES == SOURCES
    lightning_checkpoint(reference, tmp_path / "last.ckpt", monkeypatch)
    assert tessera(["convert", "--from", "taming", str(tmp_path / "last.ckpt"), "-o", str(tmp_path / "out"),
                    "--resolution", "32"]) == 0
    printed = capsys.readouterr().out
    assert "codebook of 64 codes x 8 dims" in printed and "32x32 images -> 16x16 codes" in printed
    assert "dropped 3 source keys: training loss" in printed
    assert VQGAN.from_pretrained(tmp_path / "out").config.attn_resolutions == (16,)  # attention stays on level 1
    assert tessera(["convert", "--from", "llamagen", str(tmp_path / "last.ckpt"), "-o", str(tmp_path / "x")]) == 2
    assert "not a llamagen VQ-GAN checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_holding_another_object_is_refused_unloaded(tmp_path, reference, zip_format):
    calls = []
    checkpoint = {"state_dict": reference.state_dict(), "trainer": Trainer(), "hook": RecordsItsUnpickling()}
    torch.save(checkpoint, tmp_path / "evil.ckpt", _use_new_zipfile_serialization=zip_format)
    RecordsItsUnpickling.calls = calls
    with pytest.raises(UnsupportedCheckpointError, match=r"refusing to read .*(Trainer|record_call)") as refused:
        convert_checkpoint("taming", tmp_path / "evil.ckpt", tmp_path / "out")
    assert "safetensors" in str(refused.value)
    if zip_format:  # listed beforehand: every offending object is named
        assert "Trainer" in str(refused.value) and "record_call" in str(refused.value)
    assert calls == [] and not (tmp_path / "out").exists()


class Trainer:
    def __init__(self):
        self.state = {"lr": 1e-4}


class RecordsItsUnpickling:
    calls: list = []

    def __reduce__(self):
        return (record_call, ("unpickled",))


def record_call(value: str) -> None:
    RecordsItsUnpickling.calls.append(value)


def test_unsupported_and_incomplete_taming_checkpoints_are_refused(tmp_path, reference):
    gumbel = {key.replace("quantize.embedding", "quantize.embed"): tensor
              for key, tensor in reference.state_dict().items()} | {"quantize.proj.weight": torch.zeros(64, 32, 1, 1)}
    save_file(gumbel, tmp_path / "gumbel.safetensors")
    with pytest.raises(UnsupportedCheckpointError, match="GumbelQuantize"):
        convert_checkpoint("taming", tmp_path / "gumbel.safetensors", tmp_path / "out")
    incomplete = {key: tensor for key, tensor in reference.state_dict().items()
                  if key != "decoder.up.0.block.1.conv1.bias"}
    save_file(incomplete | {"extra.weight": torch.zeros(1)}, tmp_path / "incomplete.safetensors")
    with pytest.raises(ConversionError, match=r"no rule covers extra\.weight"):
        convert_checkpoint("taming", tmp_path / "incomplete.safetensors", tmp_path / "out", resolution=RESOLUTION)
    save_file(incomplete, tmp_path / "incomplete.safetensors")
    with pytest.raises(ConversionError, match=r"does not fill: decoder\.up\.0\.block\.1\.conv1\.bias"):
        convert_checkpoint("taming", tmp_path / "incomplete.safetensors", tmp_path / "out", resolution=RESOLUTION)
