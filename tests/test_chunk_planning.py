"""Pure parts of the transcription service: packing speech into chunks, windows, joining texts.

No vLLM and no model: these run in milliseconds.
"""

import itertools

import pytest

from server.files.transcription import Chunk, TextJoiner, fixed_windows, pack_regions

# --- pack_regions ---------------------------------------------------------------------------------


def test_pack_regions_of_nothing_is_nothing() -> None:
    assert pack_regions([], 100) == []


def test_regions_that_fit_together_become_one_chunk_spanning_the_pauses() -> None:
    assert pack_regions([(10, 30), (40, 60), (70, 100)], 100) == [Chunk(10, 100)]


def test_a_chunk_is_closed_when_the_next_region_would_make_it_too_long() -> None:
    regions = [(0, 40), (50, 90), (100, 140), (150, 160)]
    assert pack_regions(regions, 100) == [Chunk(0, 90), Chunk(100, 160)]


def test_the_limit_is_inclusive() -> None:
    assert pack_regions([(0, 50), (60, 100)], 100) == [Chunk(0, 100)]
    assert pack_regions([(0, 50), (60, 101)], 100) == [Chunk(0, 50), Chunk(60, 101)]


def test_a_region_longer_than_the_limit_is_kept_whole_on_its_own() -> None:
    assert pack_regions([(0, 10), (20, 250), (260, 270)], 100) == [Chunk(0, 10), Chunk(20, 250), Chunk(260, 270)]


def test_chunks_never_overlap_and_keep_every_region() -> None:
    regions = [(i * 37, i * 37 + 20) for i in range(50)]
    chunks = pack_regions(regions, 120)
    assert all(a.end <= b.start for a, b in itertools.pairwise(chunks))
    assert all(c.end - c.start <= 120 for c in chunks)
    assert all(any(c.start <= s and e <= c.end for c in chunks) for s, e in regions)


# --- fixed_windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (0, 10, []),
        (5, 10, [Chunk(0, 5)]),
        (10, 10, [Chunk(0, 10)]),
        (25, 10, [Chunk(0, 10), Chunk(10, 20), Chunk(20, 25)]),
    ],
)
def test_fixed_windows_cover_the_audio_exactly(n: int, size: int, expected: list[Chunk]) -> None:
    assert fixed_windows(n, size) == expected


# --- TextJoiner -----------------------------------------------------------------------------------


def test_whole_chunk_texts_are_joined_with_single_spaces() -> None:
    joiner = TextJoiner()
    assert [joiner.add(0, " Hello there."), joiner.add(1, "  General Kenobi. ")] == [
        "Hello there.",
        " General Kenobi. ",
    ]
    assert joiner.text == "Hello there. General Kenobi."


def test_streamed_deltas_join_like_whole_texts() -> None:
    whole, streamed = TextJoiner(), TextJoiner()
    texts = [" one two", "", "  three", " four five "]
    for i, text in enumerate(texts):
        whole.add(i, text)
    emitted = []
    for i, text in enumerate(texts):
        for piece in [text[j : j + 2] for j in range(0, len(text), 2)] or [""]:
            emitted.append(streamed.add(i, piece))
    assert streamed.text == whole.text == "one two three four five"
    assert "".join(emitted).strip() == whole.text


def test_leading_blank_deltas_emit_nothing_and_empty_chunks_add_no_space() -> None:
    joiner = TextJoiner()
    assert joiner.add(0, "  ") == ""
    assert joiner.add(0, " a") == "a"
    assert joiner.add(1, "") == ""
    assert joiner.add(2, "\n") == ""
    assert joiner.add(2, "b") == " b"
    assert joiner.text == "a b"


def test_no_text_at_all_is_empty() -> None:
    joiner = TextJoiner()
    joiner.add(0, " ")
    assert joiner.text == ""
