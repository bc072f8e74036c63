"""Alembic environment: the tenant models' metadata, on the URL given by tenant_app.migrations."""

from __future__ import annotations

from alembic import context

import tenant_app.models  # noqa: F401  (registers every table on the metadata)
from tenant_app.db import Base, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=url.startswith("sqlite"), compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
engine.dispose()
