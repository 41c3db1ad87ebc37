from __future__ import annotations

import pytest

from cinecloud.jobs.lifecycle import Action, InvalidTransition, JobStatus, transition

Q, P, C, F, X = (
    JobStatus.QUEUED,
    JobStatus.IN_PROGRESS,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELED,
)

ALLOWED = {
    (Q, Action.LEASE): P,
    (Q, Action.CANCEL): X,
    (Q, Action.FAIL): F,
    (P, Action.COMPLETE): C,
    (P, Action.FAIL): F,
    (P, Action.REQUEUE): Q,
    (P, Action.CANCEL): X,
}


@pytest.mark.parametrize("status", list(JobStatus))
@pytest.mark.parametrize("action", list(Action))
def test_transition_table(status: JobStatus, action: Action) -> None:
    expected = ALLOWED.get((status, action))
    if expected is None:
        with pytest.raises(InvalidTransition, match=f"cannot {action.value}"):
            transition(status, action)
    else:
        assert transition(status, action) is expected


def test_status_values_are_the_openai_names_plus_canceled() -> None:
    assert [s.value for s in JobStatus] == [
        "queued",
        "in_progress",
        "completed",
        "failed",
        "canceled",
    ]
