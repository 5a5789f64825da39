"""create_app(): routers, error handlers, and the database opened (and migrated) on start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

import hub.wiring  # noqa: F401  (every rule registered before any work)
from adapters.registry import inbound_channels, notifier
from hub import __version__
from hub.api import (
    accesslog,
    auth,
    conformance,
    consent,
    delivery,
    exception_handlers,
    fhir,
    messaging,
    openapi,
    workflows,
)
from hub.api.formats import check_format
from hub.api.heads import HeadAsGet
from hub.api.inputs import check_url
from hub.api.turns import write_turns
from hub.audit.recorder import Auditor
from hub.audit.seal import Sealer
from hub.audit.signing import Signer, public_keys_from
from hub.audit.spool import ReadAudit
from hub.config import Settings, get_settings
from hub.db.engine import Database
from hub.db.migrate import upgrade
from hub.delivery.dispatcher import start_dispatcher
from hub.scheduler.runner import start_scheduler
from hub.ui import people_routes
from hub.ui import routes as ui_routes
from hub.ui.pages import address_error_page


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """The hub's ASGI app; the schema is brought up to date when it starts."""
    settings = settings or get_settings()
    accesslog.install()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database.connect(settings)
        if migrate:
            upgrade(database.engine)
        app.state.database = database
        app.state.auditor = Auditor(Signer.from_file(settings.audit_key_file),
                                    base_url=settings.fhir_base)
        app.state.read_audit = reads = ReadAudit(database, settings)
        app.state.write_turns = write_turns(settings, database.dialect)
        # Adapters first: a process that cannot take its ports starts nothing else.
        channels = inbound_channels(database, settings, app.state.auditor)
        for channel in channels:
            await channel.start()
        dispatcher = (start_dispatcher(database, settings, app.state.auditor)
                      if settings.dispatcher else None)
        scheduler = (start_scheduler(database, settings, app.state.auditor)
                     if settings.scheduler else None)
        mail = notifier(database, settings)
        if mail is not None:
            mail.start()
        app.state.scheduler = scheduler
        sealer = (Sealer(database, app.state.auditor.signer, interval=settings.seal_interval,
                         keys=public_keys_from(settings.audit_trusted_keys),
                         reads=reads).start()
                  if settings.sealer else None)
        app.state.sealer = sealer
        try:
            yield
        finally:
            if mail is not None:
                mail.stop()
            if sealer is not None:
                sealer.stop()
            if scheduler is not None:
                scheduler.stop()
            if dispatcher is not None:
                dispatcher.stop()
            for channel in channels:
                await channel.stop()
            reads.close()
            database.dispose()

    app = FastAPI(title="CareHub", version=__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None,
                  dependencies=[Depends(check_format), Depends(check_url)])
    app.state.settings = settings
    app.add_middleware(HeadAsGet)
    exception_handlers.install(app, pages=("/ui", address_error_page))
    openapi.install(app)
    app.include_router(auth.router)  # before fhir: its catch-all would take .well-known
    app.include_router(consent.router)  # before fhir, for the same reason
    app.include_router(workflows.router)  # before fhir, for the same reason
    app.include_router(messaging.router)
    app.include_router(delivery.router)  # before fhir: GET /fhir/Bundle?message.receiver=
    app.include_router(conformance.router)
    app.include_router(fhir.router)
    app.include_router(ui_routes.router)
    app.include_router(people_routes.router)
    return app
