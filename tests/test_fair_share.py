"""Fair share across owners: the verdict as a pure function (no services needed)."""

from datetime import UTC, datetime, timedelta

from inference_app.services.lifecycle.decisions import Slot, admit, fair_share, owner_limit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def slot(model_id, owner, minutes_ago=None, pinned=False, admin=False, running=True):
    used = NOW - timedelta(minutes=minutes_ago) if minutes_ago is not None else None
    return Slot(model_id, owner, running, pinned, admin, used)


def test_owner_limit_defaults_to_half_the_cap_rounded_up():
    assert [owner_limit(cap, 0) for cap in (1, 2, 3, 10)] == [1, 1, 2, 5]
    assert owner_limit(10, 7) == 7


def test_fair_share_divides_the_cap_among_the_owners_who_want_slots():
    assert fair_share(10, 3) == 3 and fair_share(2, 2) == 1 and fair_share(2, 5) == 1 and fair_share(4, 0) == 4


def test_free_slot_under_both_limits():
    assert admit("bob", [slot(1, "alice", 1)], cap=3, per_owner=2).free


def test_owner_at_their_limit_can_only_make_room_among_their_own_unpinned_models():
    slots = [slot(1, "alice", 5), slot(2, "alice", 9, pinned=True), slot(3, "bob", 60)]
    verdict = admit("alice", slots, cap=10, per_owner=2)
    assert not verdict.free and verdict.reason == "owner_limit"
    assert [s.model_id for s in verdict.candidates] == [1]


def test_admin_start_is_not_held_back_by_the_owner_limit():
    slots = [slot(1, "alice", 5, pinned=True)]
    assert admit("alice", slots, cap=10, per_owner=1, beyond_owner_limit=True).free


def test_at_the_cap_the_owner_holding_most_slots_gives_one_up_first():
    slots = [slot(1, "alice", 1), slot(2, "alice", 2), slot(3, "bob", 50)]
    verdict = admit("carol", slots, cap=3, per_owner=3)
    assert verdict.reason == "capacity"
    assert [s.model_id for s in verdict.candidates] == [2, 1, 3]  # alice's least recently used first


def test_pins_are_reclaimed_only_from_owners_above_their_share_for_one_below_it():
    alice_pins = [slot(1, "alice", 1, pinned=True), slot(2, "alice", 2, pinned=True)]
    for_bob = admit("bob", alice_pins, cap=2, per_owner=2)
    assert [s.model_id for s in for_bob.candidates] == [2, 1]
    for_alice = admit("alice", alice_pins, cap=2, per_owner=3)
    assert for_alice.candidates == ()  # alice is not below her share: her own pins stay
    balanced = [slot(1, "alice", 1, pinned=True), slot(2, "bob", 2, pinned=True)]
    assert admit("carol", balanced, cap=2, per_owner=2).candidates == ()  # nobody is above the share of 1


def test_an_admin_pin_is_never_reclaimed():
    pins = [slot(1, "alice", 1, pinned=True, admin=True), slot(2, "alice", 2, pinned=True, admin=True)]
    assert admit("bob", pins, cap=2, per_owner=2).candidates == ()


def test_never_used_models_go_before_used_ones_and_starting_models_are_not_candidates():
    slots = [slot(1, "alice", 3), slot(2, "alice", None), slot(3, "alice", None, running=False)]
    assert [s.model_id for s in admit("bob", slots, cap=3, per_owner=3).candidates] == [2, 1]


def test_equal_holders_do_not_take_each_others_slots_but_an_owner_evicts_their_own():
    slots = [slot(1, "alice", 1), slot(2, "bob", 90)]
    assert admit("alice", slots, cap=2, per_owner=2).candidates == (slots[0],)
    assert admit("carol", slots, cap=2, per_owner=2).candidates == (slots[1], slots[0])
