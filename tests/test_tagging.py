from dataclasses import replace
from datetime import timedelta

import pytest

from edge.config import Profile
from edge.errors import ConfigError
from edge.policy import strictest
from edge.tagging import tag_session
from edge.values import TagRule


def test_given_profile_wins(load):
    tag = tag_session(load(household='active_profile = "parent"'), given="child")
    assert (tag.profile.name, tag.rule) == ("child", TagRule.GIVEN)


def test_household_active_profile(load):
    tag = tag_session(load(household='active_profile = "parent"'))
    assert (tag.profile.name, tag.rule) == ("parent", TagRule.ACTIVE)


def test_runtime_active_profile_overrides_config(load):
    tag = tag_session(load(household='active_profile = "parent"'), active="child")
    assert (tag.profile.name, tag.rule) == ("child", TagRule.ACTIVE)


def test_unknown_speaker_gets_strictest_profile(load):
    tag = tag_session(load())
    assert (tag.profile.name, tag.rule) == ("child", TagRule.STRICTEST)


def test_unknown_given_profile_is_an_error(load):
    with pytest.raises(ConfigError, match="no profile named 'grandma'.*parent, child"):
        tag_session(load(), given="grandma")


def _profile(name, kind="adult", audio="1h", transcript="1d", training=False):
    hours = {"0s": 0, "1h": 1, "2h": 2, "1d": 24}
    return Profile(
        name=name,
        kind=kind,
        keep_audio=timedelta(hours=hours[audio]),
        keep_transcript=timedelta(hours=hours[transcript]),
        allow_training=training,
        inactive_after=timedelta(days=90),
    )


STRICTEST_CASES = [
    # (profiles, expected): shortest audio first, then transcript, then child, then no training
    ([_profile("a", audio="2h"), _profile("b", audio="1h")], "b"),
    ([_profile("a", transcript="1d"), _profile("b", transcript="1h")], "b"),
    ([_profile("adult"), _profile("kid", kind="child")], "kid"),
    ([_profile("kid", kind="child", audio="1h"), _profile("guest", audio="0s", transcript="0s")], "guest"),
    ([_profile("b", training=True), _profile("a2", training=False)], "a2"),
    ([_profile("b"), _profile("a")], "a"),
]


@pytest.mark.parametrize("profiles,expected", STRICTEST_CASES)
def test_strictest_order(profiles, expected):
    assert strictest(profiles).name == expected
    assert strictest(list(reversed(profiles))).name == expected


def test_strictest_never_picks_longer_retention_for_a_child():
    kid = _profile("kid", kind="child", audio="2h")
    adult = replace(_profile("adult"), keep_audio=timedelta(hours=1))
    assert strictest([kid, adult]).name == "adult"
