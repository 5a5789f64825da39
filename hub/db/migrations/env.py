"""Alembic environment: runs on the connection the hub hands over, or opens one from the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from hub.audit import models as audit_models  # noqa: F401  (registers its tables)
from hub.db import auth_models  # noqa: F401  (registers its tables)
from hub.db.models import Base
from hub.messaging import models as messaging_models  # noqa: F401  (registers its tables)
from hub.scheduler import models as scheduler_models  # noqa: F401  (registers its tables)
from hub.workflows import models as workflow_models  # noqa: F401  (registers its tables)

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


run()
