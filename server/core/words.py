"""Timed words, as OpenAI's `verbose_json` `words` and the realtime transcript carry them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """One word, with its times in seconds."""

    word: str
    start: float
    end: float
