"""Training the tiny text encoder on the captions (`ltx_core.training.train_text`), on CPU at
toy sizes: its inputs match the pipeline's, it learns, and it trains beside the DiT."""

from __future__ import annotations

import pytest
import torch

from ltx_core.models.text_encoder import TextEncoder, encode_prompt, load_tokenizer
from ltx_core.training import captions, data, t5, train_text
from ltx_core.training.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(train_tokenizer(tmp_path_factory.mktemp("tok") / "spiece.model"))


def small_encoder():
    return t5.new_text_encoder(0, num_layers=1, d_model=32, d_kv=8, d_ff=64, num_heads=2)


def test_the_encoders_training_inputs_are_the_pipelines(tokenizer):
    """Token ids padded to the pipeline's length and run unmasked, as `encode_prompt` runs
    them: the DiT trains on the embeddings it will get at inference."""
    model = small_encoder()
    specs = data.training_specs(0, 0, 3)
    bank = train_text.CaptionBank.build(specs, tokenizer, 2)
    assert bank.ids.shape == (3, 2, train_text.TEXT_MAX_TOKENS)
    assert bank.labels.shape == (3, 2, len(train_text.ATTRIBUTES))
    texts = [captions.caption(s, 1) for s in specs]
    with torch.no_grad():
        embeds, mask = train_text.encode_ids(model, bank.ids[:, 1])
        reference = encode_prompt(TextEncoder(tokenizer, model), texts, train_text.TEXT_MAX_TOKENS)
    keep = train_text.TEXT_KEEP_TOKENS
    torch.testing.assert_close(embeds, reference.embeds[:, :keep])
    assert torch.equal(mask, reference.mask[:, :keep])


def test_labels_name_each_attribute_of_the_caption():
    spec = data.heldout_specs(1)[0]
    _, labels = captions.labeled_caption(spec)
    row = train_text.label_row(labels)
    assert [train_text.ATTRIBUTES[k][i] for k, i in zip(train_text.ATTRIBUTES, row)][:4] == [
        spec.main.color,
        spec.background,
        spec.main.shape,
        spec.main.motion,
    ]


def test_pretraining_lowers_the_attribute_loss(tokenizer):
    torch.manual_seed(0)
    model, heads = small_encoder(), train_text.AttributeHeads(32)
    bank = train_text.CaptionBank.build(data.training_specs(0, 0, 16), tokenizer, 2)
    ids, labels = bank.ids[:, 0], bank.labels[:, 0]
    with torch.no_grad():
        before, _ = train_text.attribute_loss(heads, *train_text.encode_ids(model, ids), labels)
    settings = train_text.TextTrainSettings(steps=60, batch_size=8, warmup_steps=2, learning_rate=5e-3)
    assert train_text.pretrain(model, heads, bank, settings, log=lambda _: None) == 60
    with torch.no_grad():
        after, _ = train_text.attribute_loss(heads, *train_text.encode_ids(model, ids), labels)
    assert after < 0.7 * before
    read = train_text.read_accuracy(model, heads, bank)
    assert set(read) == {"all", *train_text.ATTRIBUTES} and 0 <= read["all"] <= 1


def test_joint_captions_train_the_encoder_and_keep_its_ema(tokenizer):
    """Beside the DiT: embeddings with a gradient, the null prompts from the same encoder,
    the heads' loss, and an optimizer step that moves the encoder and its EMA."""
    torch.manual_seed(0)
    model, heads = small_encoder(), train_text.AttributeHeads(32)
    bank = train_text.CaptionBank.build(data.training_specs(0, 0, 4), tokenizer, 2)
    null_ids, _ = tokenizer.padded(["", "blurry"], train_text.TEXT_MAX_TOKENS)
    joint = train_text.JointCaptions(model, heads, bank, null_ids, learning_rate=1e-2, aux_weight=0.5)
    text, mask, null_text, null_mask, loss = joint(torch.tensor([0, 3, 3]), torch.Generator().manual_seed(0))
    assert text.shape == (3, train_text.TEXT_KEEP_TOKENS, 32) and null_text.shape[0] == 2
    assert mask.shape == (3, train_text.TEXT_KEEP_TOKENS) and not null_mask[0, 1]  # "" is </s> alone
    before = model.shared.weight.detach().clone()
    ema_before = joint.ema.shared.weight.detach().clone()
    (text.square().mean() + null_text.square().mean() + loss).backward()
    joint.update(lr_scale=1.0, ema_decay=0.5)
    assert not torch.equal(model.shared.weight, before)
    expected = ema_before.lerp(model.shared.weight.detach(), 0.5)
    torch.testing.assert_close(joint.ema.shared.weight, expected)
