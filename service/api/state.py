"""What the running app holds: settings and the engine (None until loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from service.config import Settings
from service.engine import Engine


@dataclass
class AppState:
    settings: Settings
    engine: Engine | None = None
    load_error: str | None = None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.qa
    return state


def ready_engine(request: Request) -> Engine:
    state = app_state(request)
    if state.engine is None:
        detail = (
            f"index could not be loaded: {state.load_error}"
            if state.load_error
            else "the index is still loading; try again in a few seconds"
        )
        raise HTTPException(status_code=503, detail=detail, headers={"Retry-After": "2"})
    return state.engine
