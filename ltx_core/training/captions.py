"""Captions of the synthetic clips in many forms, and a reader of prompts in their words.

A caption is a pure function of a clip and a variant number (`random.Random` seeded from
both, the same on any machine), so a clip can be described several ways. It varies:
synonyms (box or cube for square, ball, disc or dot for circle, backdrop, navy, grey),
word order (the background first or last, the color before the noun or after it), the
speed word's place or its absence, short fragments, articles or none. Some sentence forms
(`HELDOUT_FORMS`) are never trained on: the evaluation asks for them to see whether the
text encoder learned the words rather than the templates.

`read_prompt` reads the asked attributes back from such a prompt by keyword rules; the
evaluation uses it for prompts written by people (the README's, the workflows').
"""

from __future__ import annotations

import random
import re

from .data import ClipSpec, Shape

SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "cube"),
    "triangle": ("triangle",),
}
SYNONYMS = {
    "gray": ("gray", "grey"),
    "dark gray": ("dark gray", "dark grey"),
    "light gray": ("light gray", "light grey"),
    "dark blue": ("dark blue", "navy", "navy blue"),
}
BACKGROUND_NOUNS = ("background", "backdrop")

# (verb, its -ing form, the words after it): the speed word can go before, between or after.
MOTION_PHRASES = {
    "left": (("slides", "sliding", "to the left"), ("moves", "moving", "left"),
             ("glides", "gliding", "toward the left"), ("drifts", "drifting", "left"),
             ("travels", "traveling", "to the left"), ("slides", "sliding", "left")),
    "right": (("slides", "sliding", "to the right"), ("moves", "moving", "right"),
              ("glides", "gliding", "toward the right"), ("drifts", "drifting", "right"),
              ("travels", "traveling", "to the right"), ("slides", "sliding", "right")),
    "up": (("moves", "moving", "up"), ("rises", "rising", ""), ("floats", "floating", "upward"),
           ("drifts", "drifting", "up"), ("climbs", "climbing", ""), ("moves", "moving", "upward")),
    "down": (("moves", "moving", "down"), ("falls", "falling", ""), ("sinks", "sinking", "downward"),
             ("drifts", "drifting", "down"), ("drops", "dropping", ""), ("descends", "descending", "")),
    "grow": (("grows", "growing", ""), ("gets", "getting", "bigger"), ("expands", "expanding", ""),
             ("grows", "growing", "larger"), ("swells", "swelling", "")),
    "shrink": (("shrinks", "shrinking", ""), ("gets", "getting", "smaller"), ("contracts", "contracting", ""),
               ("shrinks", "shrinking", "smaller")),
    "bounce": (("bounces", "bouncing", ""), ("hops", "hopping", "up and down"),
               ("bounces", "bouncing", "up and down"), ("jumps", "jumping", "up and down")),
    "still": (("stays", "staying", "still"), ("does not move", "not moving", ""), ("rests", "resting", "in place"),
              ("sits", "sitting", "still"), ("remains", "remaining", "motionless")),
}  # fmt: skip
SPEED_WORDS = {"slow": ("slowly", "gently", "leisurely"), "fast": ("quickly", "fast", "rapidly", "swiftly")}
SPEED_SAID = 0.85  # the rest of the captions leave the speed open

# {S}: the shape ("a red ball"), {V} / {Ving}: its motion with the speed word somewhere,
# {B}: the background with its noun, {Bp}: after a preposition, where the noun may go
# ("over navy blue"); {shape}, {color}, {bgcolor}, {noun}: single words for the forms
# that name them apart; {Speed} + {V0}: the speed word first, the motion without it.
TRAIN_FORMS = (
    "{S} {V} over {Bp}.",
    "{S} {V} on {Bp}.",
    "On {Bp}, {S} {V}.",
    "A video of {S} that {V} against {Bp}.",
    "{S} {V}, {B}.",
    "{S} {Ving} over {Bp}",
    "{B}, {S} {Ving}",
    "{S} on {Bp}, {Ving}.",
    "The {shape} is {color} and the {noun} is {bgcolor}; it {V}.",
    "{B} with {S} {Ving}.",
    "In front of {Bp}, {S} {V}.",
    "{S} over {Bp}, {Ving}",
)
HELDOUT_FORMS = (
    "{S} {Ving}, {B}",  # green box drifting right, black backdrop
    "{S} {Ving} against {Bp}",  # a yellow ball rising slowly against navy blue
    "{Speed}, {S} {V0} over {Bp}.",
    "{B}. {S} {V}.",
    "The {noun} is {bgcolor}, and {S} {V}.",
)
SECOND_FORMS = (
    " A small {color} {shape} stays still in the {corner}.",
    " A small {color} {shape} sits still in the {corner} corner.",
    " A small {color} {shape} rests in the {corner}.",
)


def color_words(name: str) -> tuple[str, ...]:
    return SYNONYMS.get(name, (name,))


def _article(rng: random.Random) -> str:
    return rng.choices(("a ", "the ", ""), weights=(0.6, 0.15, 0.25))[0]


def _shape_phrase(shape: Shape, rng: random.Random) -> str:
    return f"{_article(rng)}{rng.choice(color_words(shape.color))} {rng.choice(SHAPE_WORDS[shape.shape])}"


def _background_phrase(spec: ClipSpec, rng: random.Random, bare: bool) -> tuple[str, bool]:
    """(phrase, whether it names the style). `bare`: the color alone may stand for it."""
    color = rng.choice(color_words(spec.background))
    if bare and rng.random() < 0.2:
        return color, False
    noun = rng.choice(BACKGROUND_NOUNS)
    style = spec.background_style
    said = rng.random() < (0.35 if style == "plain" else 0.8)
    if said and style == "gradient":
        phrase = f"{color} gradient {noun}"
    else:
        phrase = f"{style} {color} {noun}" if said else f"{color} {noun}"
    return _article(rng) + phrase, said


def _motion_phrase(shape: Shape, rng: random.Random, ing: bool, speed: str | None) -> str:
    """The motion, with `speed` (a speed word, or None) before, between or after its words."""
    verb, verb_ing, rest = rng.choice(MOTION_PHRASES[shape.motion])
    words = [verb_ing if ing else verb, rest]
    if speed is not None:
        words.insert(rng.choice((0, 1, 2)), speed)
    return " ".join(w for w in words if w)


def _finish(text: str) -> str:
    """Single spaces, "an" before a vowel, each sentence capitalized."""
    text = " ".join(text.split())
    text = re.sub(r"\b([Aa]) (?=[aeiou])", lambda m: m.group(1) + "n ", text)
    return re.sub(r"(^|\. )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _form(rng: random.Random, heldout: bool, has_speed: bool) -> str:
    forms = HELDOUT_FORMS if heldout else TRAIN_FORMS
    return rng.choice([f for f in forms if has_speed or "{Speed}" not in f])


def labeled_caption(spec: ClipSpec, variant: int = 0, heldout_form: bool = False) -> tuple[str, dict[str, str]]:
    """(caption, what it says): the labels name the main shape's color, shape, motion, the
    background, and the speed and background style or "unsaid" where the caption leaves
    them open; the second shape's color, shape and corner, or "none"; and the sentence form."""
    rng = random.Random(spec.caption_seed * 7919 + 2 * variant + int(heldout_form))
    m = spec.main
    speed = None
    if m.motion != "still" and rng.random() < SPEED_SAID:
        speed = rng.choice(SPEED_WORDS[m.speed])
    form = _form(rng, heldout_form, speed is not None)
    background, style_said = _background_phrase(spec, rng, bare=False)
    bare_background, bare_style_said = _background_phrase(spec, rng, bare=True)
    style_said = style_said if "{B}" in form else bare_style_said
    text = form.format(
        S=_shape_phrase(m, rng),
        V=_motion_phrase(m, rng, False, speed),
        Ving=_motion_phrase(m, rng, True, speed),
        V0=_motion_phrase(m, rng, False, None),
        Speed=speed,
        B=background,
        Bp=bare_background,
        shape=rng.choice(SHAPE_WORDS[m.shape]),
        color=rng.choice(color_words(m.color)),
        bgcolor=rng.choice(color_words(spec.background)),
        noun=rng.choice(BACKGROUND_NOUNS),
    )
    if "{noun}" in form:
        style_said = False
    if spec.second is not None:
        s = spec.second
        text = text if text.endswith(".") else text + "."  # a fragment ends before the next sentence
        text += rng.choice(SECOND_FORMS).format(
            color=rng.choice(color_words(s.color)), shape=rng.choice(SHAPE_WORDS[s.shape]), corner=spec.second_corner
        )
    labels = {
        "color": m.color,
        "background": spec.background,
        "shape": m.shape,
        "motion": m.motion,
        "speed": m.speed if speed is not None else "unsaid",
        "style": spec.background_style if style_said else "unsaid",
        "second_color": spec.second.color if spec.second else "none",
        "second_shape": spec.second.shape if spec.second else "none",
        "corner": spec.second_corner or "none",
        "form": form,
    }
    return _finish(text), labels


def caption(spec: ClipSpec, variant: int = 0, heldout_form: bool = False) -> str:
    """One caption of the clip, e.g. 'A red circle slides slowly to the left over a dark
    blue background.'; another `variant` words it another way."""
    return labeled_caption(spec, variant, heldout_form)[0]


# ---------------------------------------------------------------- reading a prompt

# Words that name a motion whatever the verb; "up and down" is read before "up" and "down".
MOTION_CUES = (
    ("bounce", ("up and down", "bounces", "bouncing", "hops", "hopping", "jumps", "jumping")),
    ("grow", ("grows", "growing", "bigger", "larger", "expands", "expanding", "swells", "swelling")),
    ("shrink", ("shrinks", "shrinking", "smaller", "contracts", "contracting")),
    ("still", ("still", "not move", "not moving", "in place", "motionless")),
    ("left", ("left",)),
    ("right", ("right",)),
    ("up", ("up", "upward", "rises", "rising", "climbs", "climbing")),
    (
        "down",
        ("down", "downward", "falls", "falling", "sinks", "sinking", "drops", "dropping", "descends", "descending"),
    ),
)
PREPOSITIONS = ("over", "on", "against", "of")  # "in front of"
STYLE_WORDS = ("plain", "gradient", "textured", "a", "an", "the")


def _color_mentions(words: list[str]) -> list[tuple[int, int, str]]:
    """(first word, word after, color name) of every color phrase, the longest match first."""
    phrases = sorted(
        ((tuple(w.split()), name) for name in _all_colors() for w in color_words(name)), key=lambda p: -len(p[0])
    )
    found, i = [], 0
    while i < len(words):
        match = next(((p, n) for p, n in phrases if tuple(words[i : i + len(p)]) == p), None)
        if match:
            found.append((i, i + len(match[0]), match[1]))
            i += len(match[0])
        else:
            i += 1
    return found


def _all_colors() -> list[str]:
    from .data import COLORS

    return list(COLORS)


def _is_background(words: list[str], start: int, end: int) -> bool:
    """A color phrase names the background when a background noun follows it (style words
    between), "background is" comes before it, or a preposition does and no shape follows."""
    after = [w for w in words[end:] if w != "gradient"][:1]
    if after and after[0] in BACKGROUND_NOUNS:
        return True
    if words[max(0, start - 2) : start] in ([n, "is"] for n in BACKGROUND_NOUNS):
        return True
    before = [w for w in words[:start] if w not in STYLE_WORDS][-1:]
    shape_after = words[end : end + 1] and any(words[end] in v for v in SHAPE_WORDS.values())
    return bool(before) and before[0] in PREPOSITIONS and not shape_after


def _motion_of(text: str) -> str | None:
    for motion, cues in MOTION_CUES:
        if any(re.search(rf"\b{cue}\b", text) for cue in cues):
            return motion
    return None


def read_prompt(prompt: str) -> dict[str, str | None]:
    """What a prompt in the captions' words asks for: color, background, shape, motion and
    speed (None where it says nothing the rules know). Sentences about a "small" second
    shape are left out."""
    sentences = [s for s in re.split(r"(?<=\.)\s+", prompt.lower()) if " small " not in f" {s} "]
    text = " ".join(sentences)
    words = re.findall(r"[a-z]+", text)
    asked: dict[str, str | None] = dict.fromkeys(("color", "background", "shape", "motion", "speed"))
    for start, end, name in _color_mentions(words):
        key = "background" if _is_background(words, start, end) else "color"
        asked[key] = asked[key] or name
    asked["shape"] = next((s for w in words for s, names in SHAPE_WORDS.items() if w in names), None)
    asked["motion"] = _motion_of(" ".join(words))
    asked["speed"] = next((s for w in words for s, names in SPEED_WORDS.items() if w in names), None)
    return asked
