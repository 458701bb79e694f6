"""The Neurosynth decoder as the emulator plays it: words per image, and its usual failures.

``GET /api/decode/?neurovault=<id>`` on neurosynth.org answers correlations between the image and
term maps. It is often down: it answers an HTML page with status 200, or a 5xx, or an empty
``values`` mapping. Which of these an image gets is a pure function of (seed, image id), so tests
can count on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

VOCABULARY: tuple[str, ...] = (
    "action", "attention", "auditory", "button", "cognitive control", "conflict", "emotion",
    "encoding", "face", "finger", "hand", "inhibition", "language", "memory", "motor",
    "movement", "pain", "premotor", "primary motor", "reward", "retrieval", "semantic",
    "sensorimotor", "speech", "tapping", "visual", "word", "working memory", "default mode",
    "decision",
)  # fmt: skip


class DecodeOutcome(StrEnum):
    WORDS = "words"
    EMPTY = "empty"  # {"data": {"values": {}}}
    HTML = "html"  # an error page with status 200
    ERROR = "error"  # HTTP 500


@dataclass(frozen=True)
class DecodeReply:
    outcome: DecodeOutcome
    values: dict[str, float] = field(default_factory=dict)


def _bucket(seed: int, image_id: int) -> int:
    digest = hashlib.sha256(f"neurosynth:{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 20


def decode(seed: int, image_id: int, known: bool) -> DecodeReply:
    """What the decoder answers for ``image_id`` (``known``: the image exists on NeuroVault).

    Out of 20 buckets: 1 answers 500, 2 an HTML page, 2 an empty mapping, the rest words.
    Unknown images get the HTML page, as the real service does when it cannot fetch the map.
    """
    if not known:
        return DecodeReply(DecodeOutcome.HTML)
    bucket = _bucket(seed, image_id)
    if bucket == 0:
        return DecodeReply(DecodeOutcome.ERROR)
    if bucket in (1, 2):
        return DecodeReply(DecodeOutcome.HTML)
    if bucket in (3, 4):
        return DecodeReply(DecodeOutcome.EMPTY)
    rng = np.random.default_rng([seed, image_id, 7])
    n_terms = int(rng.integers(8, 16))
    picked = sorted(rng.choice(len(VOCABULARY), size=n_terms, replace=False))
    values = {VOCABULARY[i]: round(float(rng.uniform(-0.25, 0.6)), 3) for i in picked}
    return DecodeReply(DecodeOutcome.WORDS, values)


HTML_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Neurosynth: error</title></head>\n"
    "<body><h1>Oops!</h1><p>Something went wrong while decoding this image. "
    "The image could not be retrieved from NeuroVault.</p></body></html>\n"
)
