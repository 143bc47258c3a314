"""Whether a disk already on a host is another's (`diskuse`): the refusals and their words."""

from __future__ import annotations

import pytest

from providers.model import diskuse
from providers.model.owner import Owner

pytestmark = pytest.mark.unit
A = {"project": "virtfleet", "stack": "teama", "resource": "web"}
OURS = diskuse.label(Owner("virtfleet", "teamb", "web"))


def test_only_the_resources_own_guest_or_the_domain_it_takes_over_may_have_the_disk() -> None:
    users = [("web", A), ("hand", None), ("mine", {**A, "stack": "teamb"})]
    assert diskuse.others(users, OURS) == ["web (managed by virtfleet/teama/web)", "hand (defined outside virtfleet)"]
    assert diskuse.others(users, OURS, takeover="hand") == ["web (managed by virtfleet/teama/web)"]
    assert diskuse.others([("hand", A)], OURS, takeover="hand"), "a domain of another stack is never taken over"


def test_reuse_is_refused_for_another_guests_a_backing_or_another_resources_disk() -> None:
    said = diskuse.reuse_refusal("h1", "web.qcow2", OURS, ["web (managed by virtfleet/teama/web)"], (), None)
    assert "belongs to the guest(s) web (managed by virtfleet/teama/web)" in said and "nothing changed" in said
    assert "backing file of snap.qcow2" in diskuse.reuse_refusal("h1", "web.qcow2", OURS, [], ["snap.qcow2"], None)
    kept = diskuse.reuse_refusal("h1", "web.qcow2", OURS, [], (), "virtfleet/teama/web")
    assert "kept for virtfleet/teama/web" in kept
    assert diskuse.reuse_refusal("h1", "web.qcow2", OURS, [], (), OURS) == ""
    assert diskuse.reuse_refusal("h1", "web.qcow2", OURS, [], (), None) == "", "unrecorded: reused, never grown"


def test_a_disk_not_its_own_is_never_grown_and_older_state_keeps_its_meaning() -> None:
    assert "adopt: true" in diskuse.grow_refusal("h1", "web.qcow2", [], owned=False)
    assert diskuse.grow_refusal("h1", "web.qcow2", [], owned=True) == ""
    assert diskuse.owned({"adopted": False}) and not diskuse.owned({"adopted": True})
    assert diskuse.owned({"adopted": True, "adopt": {"domain": "web"}}) and not diskuse.owned({"owned": False})
    assert not diskuse.owned({"reused": True}) and diskuse.reused({"adopted": True}) and not diskuse.reused({})
