"""Job status and its transitions: one pure function, no I/O."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TERMINAL", "Action", "InvalidTransition", "JobStatus", "transition"]


class JobStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class Action(StrEnum):
    LEASE = "lease"
    COMPLETE = "complete"
    FAIL = "fail"
    REQUEUE = "requeue"
    CANCEL = "cancel"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})

_TABLE: dict[tuple[JobStatus, Action], JobStatus] = {
    (JobStatus.QUEUED, Action.LEASE): JobStatus.IN_PROGRESS,
    (JobStatus.QUEUED, Action.CANCEL): JobStatus.CANCELED,
    (JobStatus.QUEUED, Action.FAIL): JobStatus.FAILED,
    (JobStatus.IN_PROGRESS, Action.COMPLETE): JobStatus.COMPLETED,
    (JobStatus.IN_PROGRESS, Action.FAIL): JobStatus.FAILED,
    (JobStatus.IN_PROGRESS, Action.REQUEUE): JobStatus.QUEUED,
    (JobStatus.IN_PROGRESS, Action.CANCEL): JobStatus.CANCELED,
}

# The job_events type each transition appends.
EVENT_FOR: dict[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.IN_PROGRESS: "started",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "canceled",
}


class InvalidTransition(ValueError):
    def __init__(self, status: JobStatus, action: Action) -> None:
        super().__init__(f"cannot {action.value} a job that is {status.value}")
        self.status = status
        self.action = action


def transition(status: JobStatus | str, action: Action) -> JobStatus:
    """The status after ``action``; raises :class:`InvalidTransition` if not allowed."""
    current = JobStatus(status)
    try:
        return _TABLE[(current, action)]
    except KeyError:
        raise InvalidTransition(current, action) from None
