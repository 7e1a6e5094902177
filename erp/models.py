"""Every model module, imported in one place so Alembic and the tests see all tables."""

from erp.accounts import models as accounts_models  # noqa: F401
from erp.core.db import Base
from erp.tasks import scheduler_models  # noqa: F401

__all__ = ["Base"]
