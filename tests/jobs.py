"""A queued job's fields for the store tests: one place for the defaults."""

from __future__ import annotations

from typing import Any

from cinecloud.jobs import NewJob


def new_job(tenant: str, model: str = "cinecloud/tiny-wan", **kw: Any) -> NewJob:
    """A two-step 64x64 job of ``model`` for ``tenant``; ``kw`` overrides any field."""
    args: dict[str, Any] = dict(
        tenant_id=tenant,
        model=model,
        prompt="a red ball",
        params={"steps": 2},
        seconds="1",
        size="64x64",
        seed=1,
    )
    args.update(kw)
    return NewJob(**args)
