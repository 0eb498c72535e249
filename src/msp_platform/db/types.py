from __future__ import annotations

from typing import Any

from sqlalchemy import JSON
from sqlalchemy.dialects.postgresql import JSONB

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType: Any = JSON().with_variant(JSONB(), "postgresql")
