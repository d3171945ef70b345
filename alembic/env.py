"""Alembic reads the same settings as the API and the worker."""

from logging.config import fileConfig

from alembic import context
from models.db import get_engine, make_engine
from models.tables import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def run_migrations() -> None:
    url = config.attributes.get("database_url")
    engine = make_engine(url) if url else get_engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
