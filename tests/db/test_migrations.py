"""The migrations build exactly the schema the models describe (tables, columns, indexes,
constraints), on both databases: an index added to a model without its migration (or the
other way round) fails here instead of in production."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hub.audit import models as audit_models  # noqa: F401  (registers its tables)
from hub.auth.subject import Subject
from hub.db import auth_models  # noqa: F401  (registers its tables)
from hub.db.engine import Database
from hub.db.models import Base
from hub.delivery.service import record_ack
from hub.errors import NotFoundError
from hub.messaging import models as messaging_models  # noqa: F401  (registers its tables)
from hub.scheduler import models as scheduler_models  # noqa: F401  (registers its tables)
from hub.workflows import models as workflow_models  # noqa: F401  (registers its tables)
from tests.plans import sqlite_plan, statements_of


def test_the_migrated_schema_is_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_acknowledgements_find_a_message_by_its_header_id_through_an_index(
        database: Database) -> None:
    """record_ack names the message by its header id alone: an index search, not a read of
    every delivery to the receiver (SQLite's plan of the statement it runs)."""
    if database.dialect != "sqlite":
        pytest.skip("reads SQLite's query plan; the index is the same on both")
    acker = Subject("client", "time-ehr", "time-kommune", frozenset({"system/*.*"}))

    def acknowledge() -> None:
        with database.session(write=True) as s, pytest.raises(NotFoundError):
            record_ack(s, acker, response_identifier="no-such-message", code="ok")

    [(statement, params)] = [(st, p) for st, p in statements_of(database.engine, acknowledge)
                             if "header_id" in st]
    plan = sqlite_plan(database.engine, statement, params)
    assert "ix_messages_header (header_id=?)" in plan, plan
    assert "SCAN " not in plan, plan
