"""The cloud's application, wired in one place: each domain's REST API and console pages (``cloud/<domain>/api.py``,
``pages.py``), the console's plumbing, the node (:class:`cloud.service.CloudService`) started and stopped with
the app; errors are JSON with a reason."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from civicedge import __version__
from cloud.alarms import api as alarms_api
from cloud.alarms import pages as alarms_pages
from cloud.api.deps import allow
from cloud.api.limits import BodyLimit
from cloud.auth import api as auth_api
from cloud.auth import pages as auth_pages
from cloud.console import live, mobile, overview
from cloud.console.app import install as install_console
from cloud.devices import api as devices_api
from cloud.devices import pages as devices_pages
from cloud.elevators import pages as elevators_pages
from cloud.gate import api as gate_api
from cloud.gate import pages as gate_pages
from cloud.parking import api as parking_api
from cloud.parking import pages as parking_pages
from cloud.provisioning import api as provisioning_api
from cloud.provisioning import pages as provisioning_pages
from cloud.registry import api as registry_api
from cloud.registry import pages as registry_pages
from cloud.rules import api as rules_api
from cloud.rules import pages as rules_pages
from cloud.sensors import pages as sensors_pages
from cloud.service import CloudService
from cloud.settings import Settings
from cloud.updates import api as updates_api
from cloud.workorders import api as workorders_api
from cloud.workorders import pages as workorders_pages

log = logging.getLogger("civicedge.cloud.api")
#: every response: never sniffed, never framed, no referrer leaves the console
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: scripts only from the console's own files (no inline script, no eval); pictures from the cloud itself
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_DOCS = ("/docs", "/redoc")
#: each domain's REST API (``/api/…``, ``/auth/…``), in one place
API_ROUTERS = (
    auth_api.router,
    devices_api.router,
    alarms_api.router,
    rules_api.router,
    registry_api.router,
    workorders_api.router,
    gate_api.router,
    parking_api.router,
    provisioning_api.router,
    updates_api.router,
)
#: each domain's console pages (``/console/…``), the overview, the phone views and the live channel
CONSOLE_ROUTERS = (
    overview.router,
    devices_pages.router,
    alarms_pages.router,
    workorders_pages.router,
    registry_pages.router,
    gate_pages.router,
    parking_pages.router,
    elevators_pages.router,
    sensors_pages.router,
    rules_pages.router,
    auth_pages.router,
    provisioning_pages.router,
    mobile.router,
    live.router,
)


def create_app(settings: Settings | None = None, service: CloudService | None = None) -> FastAPI:
    settings = service.settings if service is not None else settings or Settings()
    private_ops = settings.ops_need_login

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service or CloudService(settings)
        svc.start()
        app.state.service = svc
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title="CivicEdge cloud",
        version=__version__,
        lifespan=lifespan,
        description="Devices, telemetry, events, alarms, dead letters and commands.",
        # CE_OPS_NEED_LOGIN: the schema and its pages only for someone logged in (below)
        openapi_url=None if private_ops else "/openapi.json",
        docs_url=None if private_ops else "/docs",
        redoc_url=None if private_ops else "/redoc",
    )
    if private_ops:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/openapi.json", include_in_schema=False, dependencies=[allow("devices.view")])
        def private_openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=[allow("devices.view")])
        def private_docs() -> Any:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="CivicEdge cloud")

    for r in API_ROUTERS:
        app.include_router(r)
    install_console(app)
    for r in CONSOLE_ROUTERS:
        app.include_router(r)

    app.add_middleware(BodyLimit)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith(API_DOCS):  # FastAPI's own docs page runs an inline script
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": exc.detail, "status": exc.status_code}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(OverflowError)
    async def overflow(_r: Request, exc: OverflowError) -> JSONResponse:
        # a number a client typed that the database cannot hold (an id of 2^63, …): the client's error, not ours
        return JSONResponse({"error": "a number in the request is out of range", "status": 422}, 422)

    @app.exception_handler(DataError)
    async def data_error(r: Request, exc: DataError) -> JSONResponse:
        # a value the database refused: answered as the client's, logged as ours (a model should have bounded it)
        log.warning("request value refused by the database", extra={"path": r.url.path, "error": str(exc.orig)[:300]})
        return JSONResponse({"error": "a value in the request cannot be stored or compared", "status": 422}, 422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"field": ".".join(str(x) for x in e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "status": 422, "details": errs}, 422)

    @app.get("/healthz", tags=["ops"])
    def healthz(request: Request) -> JSONResponse:
        """200 when the database answers and no ingestion worker is stalled; 503 with what is wrong otherwise."""
        svc: CloudService = request.app.state.service
        status, body = svc.health()
        return JSONResponse(body, status)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        dependencies=[allow("devices.view")] if private_ops else [],
    )
    def metrics(request: Request) -> str:
        svc: CloudService = request.app.state.service
        svc.gauges()
        return svc.metrics.render()

    return app
