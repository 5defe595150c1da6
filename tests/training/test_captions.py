"""The captions (`ltx_core.training.captions`): many wordings of a clip, held-out sentence
forms kept out of training, and a reader that gets the asked attributes back."""

from __future__ import annotations

import json
from pathlib import Path

from ltx_core.training import captions, data

REPO = Path(__file__).resolve().parents[2]


def asked(labels: dict) -> dict:
    want = {k: labels[k] for k in ("color", "background", "shape", "motion")}
    return {**want, "speed": None if labels["speed"] == "unsaid" else labels["speed"]}


def test_a_caption_is_a_pure_function_of_its_clip_and_variant():
    spec = data.sample_clip_spec(3, 17)
    assert captions.caption(spec, 1) == captions.caption(spec, 1)
    assert len({captions.caption(spec, v) for v in range(8)}) > 4


def test_held_out_forms_never_reach_training_captions():
    """The paraphrase evaluation asks for sentence forms training never used."""
    assert not set(captions.TRAIN_FORMS) & set(captions.HELDOUT_FORMS)
    for spec in data.training_specs(0, 0, 400):
        for variant in range(3):
            assert captions.labeled_caption(spec, variant)[1]["form"] in captions.TRAIN_FORMS
            assert captions.labeled_caption(spec, variant, heldout_form=True)[1]["form"] in captions.HELDOUT_FORMS


def test_training_captions_use_every_synonym_and_leave_the_speed_open_sometimes():
    texts = [captions.labeled_caption(s, v) for s in data.training_specs(0, 0, 1500) for v in range(2)]
    words = {w for text, _ in texts for w in text.lower().replace(",", " ").replace(".", " ").split()}
    for word in ("box", "cube", "ball", "disc", "dot", "backdrop", "navy", "grey", "gray", "pink", "beige", "white"):
        assert word in words, word
    said = [labels["speed"] != "unsaid" for _, labels in texts if labels["motion"] != "still"]
    assert 0.7 < sum(said) / len(said) < 0.95


def test_the_reader_gets_back_what_every_caption_asks():
    """The evaluation reads people's prompts with it; on the captions it must be exact."""
    for spec in data.training_specs(5, 0, 1500) + data.heldout_specs(200):
        for variant, heldout_form in ((0, False), (1, True)):
            text, labels = captions.labeled_caption(spec, variant, heldout_form)
            assert captions.read_prompt(text) == asked(labels), text


def test_the_reader_reads_the_shipped_and_the_hand_written_prompts():
    assert captions.read_prompt("A red circle slides slowly to the left over a dark blue background.") == {
        "color": "red", "background": "dark blue", "shape": "circle", "motion": "left", "speed": "slow",
    }  # fmt: skip
    assert captions.read_prompt("green box drifting right, black backdrop") == {
        "color": "green", "background": "black", "shape": "square", "motion": "right", "speed": None,
    }  # fmt: skip
    assert captions.read_prompt("a yellow ball rising slowly against navy blue")["background"] == "dark blue"
    workflow = json.loads((REPO / "workflows" / "api" / "t2v.json").read_text())
    prompt = next(n["inputs"]["text"] for n in workflow.values() if n["_meta"]["title"] == "Positive prompt")
    assert None not in captions.read_prompt(prompt).values()


def test_captions_fit_the_tokens_the_dit_reads_and_every_word_is_a_piece(tmp_path):
    """Past TEXT_KEEP_TOKENS the DiT would not see a caption's end; an <unk> would hide a word."""
    from ltx_core.models.text_encoder import load_tokenizer
    from ltx_core.training.tokenizer import train_tokenizer
    from ltx_core.training.train_text import TEXT_KEEP_TOKENS

    tokenizer = load_tokenizer(train_tokenizer(tmp_path / "spiece.model"))
    texts = [captions.caption(s, v, h) for s in data.training_specs(9, 0, 300) for v in range(2) for h in (0, 1)]
    longest = max(len(ids) for ids in tokenizer(texts).input_ids)
    assert longest <= TEXT_KEEP_TOKENS
    assert tokenizer.unk_token_id not in {i for ids in tokenizer(texts).input_ids for i in ids}
