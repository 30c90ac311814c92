"""Storage: SQLAlchemy Core tables, repositories and Alembic migrations (SQLite or PostgreSQL).

Start with :class:`Database` (one per process), run :func:`upgrade`, then use
:class:`Repositories` (``Repositories.over(db)``).
"""

from nixflex_engine.store.db import Database, upgrade
from nixflex_engine.store.repositories import (
    ACTIVE_CALL_STATUSES,
    FINAL_CALL_STATUSES,
    CallFilters,
    CallInProgressError,
    CallRecord,
    CallRepository,
    DuplicateError,
    NewCall,
    Repositories,
)

__all__ = [
    "ACTIVE_CALL_STATUSES",
    "FINAL_CALL_STATUSES",
    "CallFilters",
    "CallInProgressError",
    "CallRecord",
    "CallRepository",
    "Database",
    "DuplicateError",
    "NewCall",
    "Repositories",
    "upgrade",
]
