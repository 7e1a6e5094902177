"""Every model module, imported in one place so Alembic and the tests see all tables."""

from erp.accounts import models as accounts_models  # noqa: F401
from erp.core import files  # noqa: F401
from erp.core.db import Base
from erp.features.data_processing import models as data_processing_models  # noqa: F401
from erp.sales import models as sales_models  # noqa: F401
from erp.tasks import health_check_models, scheduler_models, worker_heartbeats  # noqa: F401

__all__ = ["Base"]
