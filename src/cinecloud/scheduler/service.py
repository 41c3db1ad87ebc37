"""The service-time model: a job's work in one-GPU seconds, and its time on N ranks.

A job's work is ``pixels x frames x steps x guidance branches`` units, times the
family's ``seconds_per_unit`` (measured on one GPU with the tuned engine). Its time
on N ranks divides that by the speed-up ``S(N)`` with the family's ``alpha``
(:mod:`cinecloud.scheduler.speedup`). Both numbers per family live in
``alpha.json`` beside this module, each with the source of its value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinecloud.scheduler.speedup import service_time

__all__ = [
    "DEFAULT_TABLE",
    "FamilyModel",
    "JobShape",
    "ServiceModels",
    "guidance_branches",
    "job_work",
    "load_service_models",
    "parse_service_models",
    "with_alpha",
]

DEFAULT_TABLE = Path(__file__).with_name("alpha.json")


@dataclass(frozen=True)
class FamilyModel:
    """One family's service-time numbers and where each came from."""

    alpha: float
    seconds_per_unit: float
    alpha_source: str = "default"
    unit_source: str = "default"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1 (got {self.alpha})")
        if self.seconds_per_unit <= 0:
            raise ValueError(f"seconds_per_unit must be positive (got {self.seconds_per_unit})")


@dataclass(frozen=True)
class JobShape:
    """What a job's work depends on."""

    width: int
    height: int
    num_frames: int
    steps: int
    guidance_scale: float


@dataclass(frozen=True)
class ServiceModels:
    """The table of :class:`FamilyModel` by family, with a fallback for others."""

    families: Mapping[str, FamilyModel]
    default: FamilyModel

    def get(self, family: str) -> FamilyModel:
        return self.families.get(family, self.default)

    def work(self, family: str, shape: JobShape) -> float:
        """``shape``'s estimated seconds on one GPU."""
        return job_work(shape, self.get(family))

    def service_s(self, family: str, shape: JobShape, ranks: int) -> float:
        """``shape``'s estimated seconds on ``ranks`` ranks."""
        model = self.get(family)
        return service_time(job_work(shape, model), ranks, model.alpha)


def guidance_branches(guidance_scale: float) -> int:
    """Classifier-free guidance runs two branches per step when the scale is above 1."""
    return 2 if guidance_scale > 1.0 else 1


def job_work(shape: JobShape, model: FamilyModel) -> float:
    """Estimated one-GPU seconds: pixels x frames x steps x branches x seconds per unit."""
    units = (
        shape.width
        * shape.height
        * shape.num_frames
        * shape.steps
        * guidance_branches(shape.guidance_scale)
    )
    return units * model.seconds_per_unit


def _family(name: str, entry: Any) -> FamilyModel:
    if not isinstance(entry, Mapping):
        raise ValueError(f"service model {name!r} must be an object")
    try:
        return FamilyModel(
            alpha=float(entry["alpha"]),
            seconds_per_unit=float(entry["seconds_per_unit"]),
            alpha_source=str(entry.get("alpha_source", "default")),
            unit_source=str(entry.get("unit_source", "default")),
        )
    except KeyError as exc:
        raise ValueError(f"service model {name!r} lacks {exc.args[0]!r}") from None


def parse_service_models(data: Mapping[str, Any]) -> ServiceModels:
    """The table from its JSON form: ``{"default": {...}, "families": {name: {...}}}``."""
    families = data.get("families", {})
    if not isinstance(families, Mapping):
        raise ValueError("service models: 'families' must be an object")
    if "default" not in data:
        raise ValueError("service models: a 'default' entry is required")
    return ServiceModels(
        families={name: _family(name, entry) for name, entry in families.items()},
        default=_family("default", data["default"]),
    )


def with_alpha(data: Mapping[str, Any], family: str, alpha: float, source: str) -> dict[str, Any]:
    """A copy of the table's JSON form with ``family``'s ``alpha`` and its source set.

    A family not in the table starts from the ``default`` entry's numbers.
    """
    FamilyModel(alpha=alpha, seconds_per_unit=1.0)  # refuses an alpha outside [0, 1]
    table = parse_service_models(data)  # refuses a malformed table
    families = {name: dict(entry) for name, entry in data.get("families", {}).items()}
    if family not in families:
        base = table.default
        families[family] = {
            "seconds_per_unit": base.seconds_per_unit,
            "unit_source": base.unit_source,
        }
    families[family].update(alpha=alpha, alpha_source=source)
    return {**data, "families": families}


def load_service_models(path: Path | None = None) -> ServiceModels:
    """Read the table (the one shipped beside this module unless ``path`` is given)."""
    source = path or DEFAULT_TABLE
    with source.open(encoding="utf-8") as fh:
        return parse_service_models(json.load(fh))
