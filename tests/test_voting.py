"""The k1/k2/threshold voting rule, one test per branch."""

import itertools

import pytest

from edgeface.voting import VotingParams, vote


def test_first_k1_majority_wins():
    params = VotingParams(k1=3, k2=5, threshold=0.6)
    match = vote(["ana", "ana", "bo", "bo", "bo"], [0.30, 0.35, 0.40, 0.45, 0.50], params)
    # Within the first three, ana has two votes and bo one; bo's later
    # neighbours do not count because the first k1 were decisive.
    assert match.person == "ana"
    assert match.votes == 2
    assert match.distance == pytest.approx(0.30)
    assert match.runner_up == "bo"
    assert match.runner_up_distance == pytest.approx(0.40)


def test_neighbours_beyond_threshold_do_not_vote():
    params = VotingParams(k1=3, k2=5, threshold=0.42)
    match = vote(["ana", "bo", "bo", "bo", "bo"], [0.40, 0.41, 0.43, 0.44, 0.45], params)
    # Candidates within 0.42 among the first three: ana 0.40 and bo 0.41, a tie.
    # Extension to k2 adds nothing within 0.42, so the tie rule picks ana.
    assert match.person == "ana"
    assert match.votes == 1


def test_tie_in_k1_extends_to_k2():
    params = VotingParams(k1=2, k2=4, threshold=0.6)
    match = vote(["ana", "bo", "bo", "ana"], [0.30, 0.35, 0.40, 0.90], params)
    # First k1: ana 1, bo 1, a tie. All k2 within 0.6: ana 1, bo 2, so bo wins.
    assert match.person == "bo"
    assert match.votes == 2
    assert match.distance == pytest.approx(0.35)
    assert match.runner_up == "ana"
    assert match.runner_up_distance == pytest.approx(0.30)


def test_nothing_within_threshold_is_unknown():
    params = VotingParams(k1=3, k2=5, threshold=0.5)
    match = vote(["ana", "bo", "cy"], [0.51, 0.7, 0.9], params)
    assert match.person is None
    assert match.votes == 0
    assert match.reason == "over-threshold"
    assert match.runner_up == "ana"
    assert match.distance == pytest.approx(0.51)


def test_empty_gallery_is_unknown():
    match = vote([], [], VotingParams())
    assert match.person is None
    assert match.reason == "no-neighbours"
    assert match.distance is None


def test_tie_goes_to_smallest_distance_in_any_order():
    params = VotingParams(k1=2, k2=3, threshold=0.6)
    neighbours = [("ana", 0.31), ("bo", 0.30), ("cy", 0.9)]
    # Every enrolment order (the order the search returns equal results in)
    # must give the same result: bo, the nearest of the tied people.
    for order in itertools.permutations(neighbours):
        people = [p for p, _ in order]
        distances = [d for _, d in order]
        match = vote(people, distances, params)
        assert match.person == "bo"
        assert match.runner_up == "ana"


def test_exact_distance_tie_is_decided_by_name():
    params = VotingParams(k1=2, k2=3, threshold=0.6)
    first = vote(["bo", "ana"], [0.3, 0.3], params)
    second = vote(["ana", "bo"], [0.3, 0.3], params)
    assert first.person == second.person == "ana"


def test_min_votes_makes_weak_match_unknown():
    params = VotingParams(k1=3, k2=5, threshold=0.6, min_votes=2)
    match = vote(["ana", "bo", "cy"], [0.3, 0.7, 0.8], params)
    assert match.person is None
    assert match.reason == "too-few-votes"
    assert match.votes == 1
    assert match.runner_up == "ana"


def test_margin_makes_close_runner_up_ambiguous():
    params = VotingParams(k1=1, k2=3, threshold=0.6, margin=0.05)
    close = vote(["ana", "bo"], [0.40, 0.43], params)
    clear = vote(["ana", "bo"], [0.40, 0.50], params)
    assert close.person is None
    assert close.reason == "ambiguous"
    assert clear.person == "ana"
    assert clear.runner_up_distance == pytest.approx(0.50)


def test_zero_margin_keeps_vote_winner():
    params = VotingParams(k1=3, k2=4, threshold=0.6)
    match = vote(["bo", "ana", "ana"], [0.30, 0.32, 0.33], params)
    assert match.person == "ana"
    assert match.votes == 2
    assert match.runner_up_distance == pytest.approx(0.30)


def test_only_k2_neighbours_are_used():
    params = VotingParams(k1=1, k2=2, threshold=1.0)
    match = vote(["ana", "bo", "cy"], [0.5, 0.6, 0.1], params)
    assert match.person == "cy"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k1": 0, "k2": 2},
        {"k1": 3, "k2": 3},
        {"threshold": 0.0},
        {"threshold": 2.5},
        {"min_votes": 0},
        {"margin": -0.1},
    ],
)
def test_invalid_parameters_rejected(kwargs):
    with pytest.raises(ValueError):
        VotingParams(**kwargs)
