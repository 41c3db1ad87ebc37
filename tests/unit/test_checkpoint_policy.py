"""When the engine child takes a checkpoint: every k steps short of the last, and at
once when preempted; never where the runner offers none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cinecloud.workers.checkpoints import CheckpointWriter, checkpoint_name

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Step:
    step: int
    total_steps: int = 12
    stage: str = "denoise"
    checkpoint: Callable[[], bytes] | None = lambda: b"state"


def due_steps(every: int, preempted_at: int | None = None, start: int = 0) -> list[int]:
    writer = CheckpointWriter(every, send=lambda msg: None)
    return [
        k
        for k in range(start + 1, 13)
        if writer.due(Step(k), preempting=preempted_at is not None and k >= preempted_at)
    ]


@pytest.mark.parametrize(
    ("every", "due"),
    [(5, [5, 10]), (3, [3, 6, 9]), (1, list(range(1, 12))), (12, []), (0, [])],
)
def test_every_k_steps_short_of_the_last(every: int, due: list[int]) -> None:
    assert due_steps(every) == due


def test_a_resumed_run_counts_steps_from_the_start() -> None:
    assert due_steps(5, start=7) == [10]


def test_preempted_at_the_next_boundary_even_the_last() -> None:
    assert due_steps(0, preempted_at=12) == [12]
    assert due_steps(5, preempted_at=7) == [5, 7, 8, 9, 10, 11, 12]


def test_nothing_where_the_runner_offers_no_checkpoint() -> None:
    writer = CheckpointWriter(1, send=lambda msg: None)
    assert not writer.due(Step(3, checkpoint=None), preempting=True)
    assert not writer.due(Step(3, stage="render"), preempting=True)


def test_names_sort_by_step() -> None:
    names = [checkpoint_name(k) for k in (9, 10, 100)]
    assert (
        names
        == sorted(names)
        == [
            "checkpoints/step-000009.ckpt",
            "checkpoints/step-000010.ckpt",
            "checkpoints/step-000100.ckpt",
        ]
    )
