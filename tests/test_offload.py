"""Offloading: models placed in CPU memory and brought to the device per stage, blocks
streamed through the transformer's block-weights seam; the frames equal the resident run's
bit for bit. On the CPU the "device" copies are real copies, so the swapping is exercised;
the CUDA test runs the side-stream prefetch on the GPU."""

import copy

import pytest
import torch

from ltx_core.errors import SettingsError
from ltx_core.models.text_encoder import load_text_encoder
from ltx_core.offload import BlockStream, HostWeights, ModelPlacement, place_models
from ltx_core.pipeline import Models, Request, generate

SMALL = dict(prompt="a red fox jumps over the lazy dog", width=64, height=32, num_frames=9, steps=2)


@pytest.fixture
def models(tiny_transformer, tiny_vae, tiny_t5_folder):
    """Copies: placing changes where the modules' tensors live."""
    return Models(copy.deepcopy(tiny_transformer), copy.deepcopy(tiny_vae), load_text_encoder(tiny_t5_folder))


def transformer_inputs(cfg, batch=1, tokens=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, tokens, cfg.in_channels, generator=g),
        torch.rand(batch, generator=g),
        torch.randn(batch, 5, cfg.caption_channels, generator=g),
        torch.ones(batch, 5),
        torch.rand(batch, 3, tokens, generator=g),
    )


def test_a_resident_run_and_offloaded_runs_give_the_same_frames(models, tiny_transformer, tiny_vae, tiny_t5_folder):
    resident = generate(Models(tiny_transformer, tiny_vae, load_text_encoder(tiny_t5_folder)), Request(**SMALL))
    for streamed in (0, 1, tiny_transformer.cfg.num_layers):
        placed = copy.deepcopy(models)
        placed.placement = place_models(placed, "cpu", streamed_blocks=streamed)
        assert torch.equal(generate(placed, Request(**SMALL)), resident), streamed


def test_streamed_blocks_compute_with_copies_and_hand_back_the_host_tensors(models):
    transformer = models.transformer
    expected = transformer(*transformer_inputs(transformer.cfg))
    last = transformer.transformer_blocks[-1]
    stream = BlockStream(transformer, "cpu", resident=1)
    transformer.use_block_weights(stream)
    seen = []
    hook = last.register_forward_pre_hook(lambda module, args: seen.append(next(module.parameters()).data_ptr()))
    out = transformer(*transformer_inputs(transformer.cfg))
    hook.remove()
    host = stream.weights[len(transformer.transformer_blocks) - 1].host[0]
    assert torch.equal(out, expected)
    assert seen and seen[0] != host.data_ptr()  # the block ran on a copy
    assert next(last.parameters()).data_ptr() == host.data_ptr()  # and holds the host tensor again
    assert stream.streamed == list(range(1, transformer.cfg.num_layers))


def test_a_placed_model_is_on_the_device_only_inside_its_stage(models):
    placement = place_models(models, "cpu")
    vae = models.vae
    at_rest = [p.data_ptr() for p in vae.parameters()]
    with placement.on_device(vae) as device:
        inside = [p.data_ptr() for p in vae.parameters()]
        assert device == torch.device("cpu")
    assert not set(inside) & set(at_rest)
    assert [p.data_ptr() for p in vae.parameters()] == at_rest
    with pytest.raises(SettingsError, match="not one of the placed models"):
        with placement.on_device(torch.nn.Linear(2, 2)):
            pass


def test_streamed_blocks_are_not_counted_in_the_transformers_resident_bytes(models):
    whole = sum(t.nbytes for t in models.transformer.state_dict().values())
    block = sum(t.nbytes for t in models.transformer.transformer_blocks[-1].state_dict().values())
    placement = place_models(models, "cpu", streamed_blocks=1)
    assert placement.resident_bytes(models.transformer) == whole - block


def test_a_tied_tensor_is_held_once():
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    module[1].weight = module[0].weight
    weights = HostWeights(module, pin=False)
    assert len(weights.host) == 3  # the tied weight and two biases
    weights.attach(weights.copies(torch.device("cpu")))
    assert module[1].weight is module[0].weight


@pytest.mark.parametrize("streamed", [-1, 99])
def test_more_streamed_blocks_than_the_transformer_has_are_refused(models, streamed):
    with pytest.raises(SettingsError, match=r"resident blocks .*; allowed: 0 to 2"):
        place_models(models, "cpu", streamed_blocks=streamed)


def test_a_placement_of_no_models_places_nothing():
    placement = ModelPlacement("cpu", [])
    assert placement.weights == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the side-stream prefetch runs on CUDA only (run on the GPU)")
def test_blocks_streamed_to_the_gpu_give_the_resident_result_exactly(tiny_transformer):
    resident = copy.deepcopy(tiny_transformer).cuda()
    inputs = [t.cuda() for t in transformer_inputs(resident.cfg, tokens=64)]
    expected = [resident(*inputs) for _ in range(2)]
    streamed = copy.deepcopy(tiny_transformer)
    models = Models(streamed, copy.deepcopy(resident).cpu(), type("T", (), {"model": torch.nn.Linear(1, 1)})())
    placement = place_models(models, "cuda", streamed_blocks=streamed.cfg.num_layers)
    with placement.on_device(streamed):
        outputs = [streamed(*inputs) for _ in range(2)]  # the second forward uses the wrapped prefetch
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))
    assert all(p.device.type == "cpu" for p in streamed.parameters())
