from datetime import timedelta

import pytest

from edge.durations import format_duration, parse_duration

VALID = [
    ("0s", timedelta(0)),
    ("800ms", timedelta(milliseconds=800)),
    ("45s", timedelta(seconds=45)),
    ("90m", timedelta(minutes=90)),
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    (" 7d ", timedelta(days=7)),
]
INVALID = ["", "7", "d", "-1d", "1.5h", "7 days", "1h30m", "7D", "forever", 7, None, True]


@pytest.mark.parametrize("text,expected", VALID)
def test_valid_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", INVALID)
def test_invalid_durations_say_what_is_allowed(text):
    with pytest.raises(ValueError, match='"90m"'):
        parse_duration(text)


@pytest.mark.parametrize(
    "text,shortest",
    [("0s", "0s"), ("800ms", "800ms"), ("45s", "45s"), ("90m", "90m"), ("36h", "36h"), ("24h", "1d"), ("1500ms", "1500ms")],
)
def test_format_is_the_shortest_exact_spelling(text, shortest):
    assert format_duration(parse_duration(text)) == shortest
