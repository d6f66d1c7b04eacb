"""Tracking and the access decision (M of N frames within T seconds, one person, policy, cooldown)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from edgeface.decision import AccessDecider, DecisionParams
from edgeface.detection import Face
from edgeface.tracking import Tracker, iou
from edgeface.voting import Match


def face(x, y=0, size=100):
    return Face(box=(x, y, size, size), landmarks=np.zeros((5, 2)), score=1.0)


def match(person, distance=0.3):
    return Match(person=person, votes=1 if person else 0, distance=distance, runner_up=None, runner_up_distance=None)


def test_iou_of_known_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


def test_tracker_follows_moving_faces_and_forgets_old_ones():
    tracker = Tracker(min_iou=0.3, timeout=1.0)
    a, b = tracker.update([face(0), face(500)], now=0.0)
    assert a.id != b.id
    # Both move a little, listed in the other order.
    b2, a2 = tracker.update([face(510), face(10)], now=0.1)
    assert (a2.id, b2.id) == (a.id, b.id)
    # A face far from both starts a new track.
    (c,) = tracker.update([face(1000)], now=0.2)
    assert c.id not in (a.id, b.id)
    # After the timeout, the first face's place gives a new track.
    (d,) = tracker.update([face(10)], now=2.0)
    assert d.id not in (a.id, b.id, c.id)


def run(decider, track, people, start=0.0, step=0.125, faces=1):
    outcomes = []
    for i, person in enumerate(people):
        outcome = decider.observe(track, match(person), start + i * step, faces, datetime(2026, 12, 4, 12, 0))
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def new_track(tracker=None, x=0):
    return (tracker or Tracker()).update([face(x)], now=0.0)[0]


def test_grant_needs_min_frames_of_the_same_person():
    decider = AccessDecider(DecisionParams(min_frames=3, window_frames=5, window_seconds=2.0))
    track = new_track()
    assert run(decider, track, ["ann", None]) == []
    outcomes = run(decider, track, ["ann", "ann"], start=0.25)
    assert len(outcomes) == 1
    grant = outcomes[0]
    assert (grant.person, grant.granted, grant.reason, grant.votes) == ("ann", True, "granted", 3)
    assert decider.decided(track)


def test_single_frame_never_grants():
    decider = AccessDecider(DecisionParams(min_frames=1, window_frames=1))
    assert decider.params.min_frames == 1  # configurable, but the default is 3
    decider = AccessDecider(DecisionParams())
    assert run(decider, new_track(), ["ann"]) == []


def test_votes_older_than_the_window_do_not_count():
    decider = AccessDecider(DecisionParams(min_frames=3, window_frames=5, window_seconds=1.0))
    track = new_track()
    # Three wins, but spread over 3 seconds: never three within one second.
    assert run(decider, track, ["ann", "ann", "ann"], step=1.5) == []


def test_second_person_in_window_conflicts():
    decider = AccessDecider(DecisionParams(min_frames=3, window_frames=5))
    track = new_track()
    outcomes = run(decider, track, ["ann", "bob", "ann", "ann", "ann"])
    assert [(o.reason, o.granted) for o in outcomes] == [("conflict", False)]
    # Once bob leaves the window (five frames later), ann alone is granted.
    outcomes = run(decider, track, ["ann"] * 2, start=0.625)
    assert [(o.reason, o.granted) for o in outcomes] == [("granted", True)]


def test_unknown_track_is_reported_once():
    decider = AccessDecider(DecisionParams(min_frames=3, window_frames=5))
    outcomes = run(decider, new_track(), [None] * 12)
    assert [(o.person, o.reason) for o in outcomes] == [(None, "unknown")]


def test_several_faces_block_the_grant():
    decider = AccessDecider(DecisionParams(min_frames=3, window_frames=5, max_faces=1))
    track = new_track()
    outcomes = run(decider, track, ["ann"] * 4, faces=2)
    assert [(o.reason, o.granted) for o in outcomes] == [("several_faces", False)]
    # Alone again: granted.
    outcomes = run(decider, track, ["ann"], start=0.5, faces=1)
    assert [o.reason for o in outcomes] == ["granted"]


def test_policy_refusal_decides_the_track():
    decider = AccessDecider(DecisionParams(), policy=lambda person, when: (False, "schedule"))
    track = new_track()
    outcomes = run(decider, track, ["ann"] * 6)
    assert [(o.person, o.reason, o.granted) for o in outcomes] == [("ann", "schedule", False)]
    assert decider.decided(track)


def test_cooldown_after_a_grant():
    tracker = Tracker()
    decider = AccessDecider(DecisionParams(cooldown_seconds=5.0))
    first = new_track(tracker, x=0)
    assert [o.reason for o in run(decider, first, ["ann"] * 3)] == ["granted"]
    second = new_track(tracker, x=800)
    assert [o.reason for o in run(decider, second, ["bob"] * 3, start=1.0)] == ["cooldown"]
    # Ann again, on a new track, within the cooldown: she was just let in; nothing to report.
    again = new_track(tracker, x=2400)
    assert run(decider, again, ["ann"] * 3, start=1.0) == []
    assert decider.decided(again)
    third = new_track(tracker, x=1600)
    assert [o.reason for o in run(decider, third, ["bob"] * 3, start=10.0)] == ["granted"]


def test_params_from_config():
    from edgeface.config import load_config

    config = load_config(None, {"decision.min_frames": 2, "decision.window_frames": 4, "door.cooldown_seconds": 9.0})
    params = DecisionParams.from_config(config)
    assert (params.min_frames, params.window_frames, params.cooldown_seconds, params.max_faces) == (2, 4, 9.0, 1)
