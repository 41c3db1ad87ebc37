"""The engine: the model registry, the families' pipelines and the runner.

Importing this package (or :mod:`cinecloud.engine.registry`) does not import torch, so
the API process can validate requests against a model's limits cheaply.
"""

from __future__ import annotations

from cinecloud.engine.registry import (
    GenerationParams,
    ModelDefaults,
    ModelLimits,
    ModelNotInstalled,
    ModelSpec,
    ParamError,
    Registry,
    UnknownModel,
    builtin_specs,
    check_installed,
    default_registry,
    resolve_params,
    validate_params,
)
from cinecloud.engine.runner import (
    Cancelled,
    Runner,
    RunnerProtocol,
    RunResult,
    StepInfo,
)

__all__ = [
    "Cancelled",
    "GenerationParams",
    "ModelDefaults",
    "ModelLimits",
    "ModelNotInstalled",
    "ModelSpec",
    "ParamError",
    "Registry",
    "RunResult",
    "Runner",
    "RunnerProtocol",
    "StepInfo",
    "UnknownModel",
    "builtin_specs",
    "check_installed",
    "default_registry",
    "resolve_params",
    "validate_params",
]
