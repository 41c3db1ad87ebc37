"""``GET /v1/models``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from cinecloud.api.auth import Caller
from cinecloud.api.errors import ApiError
from cinecloud.api.openapi import errors
from cinecloud.api.schemas import ModelList, ModelObject
from cinecloud.api.state import AppState, get_state
from cinecloud.engine.registry import ModelNotInstalled, ModelSpec, UnknownModel, check_installed

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"])
State = Annotated[AppState, Depends(get_state)]


def _installed(spec: ModelSpec) -> bool:
    try:
        check_installed(spec)
    except ModelNotInstalled:
        return False
    return True


def _model(spec: ModelSpec, default_id: str) -> dict[str, Any]:
    return {
        "id": spec.id,
        "object": "model",
        "created": 0,
        "owned_by": spec.owned_by,
        "family": spec.family,
        "description": spec.description,
        "installed": _installed(spec),
        "default": spec.id == default_id,
        "defaults": asdict(spec.defaults),
        "limits": asdict(spec.limits),
        "input_image": spec.input_image,
    }


@router.get("", response_model=ModelList)
async def list_models(_: Caller, state: State) -> JSONResponse:
    reg = state.registry
    return JSONResponse({"object": "list", "data": [_model(s, reg.default_id) for s in reg.list()]})


@router.get("/{model_id:path}", response_model=ModelObject, responses=errors(404))
async def get_model(model_id: str, _: Caller, state: State) -> JSONResponse:
    try:
        spec = state.registry.get(model_id)
    except UnknownModel:
        raise ApiError(404, "model_not_found", f"no model '{model_id}'", "model") from None
    return JSONResponse(_model(spec, state.registry.default_id))
