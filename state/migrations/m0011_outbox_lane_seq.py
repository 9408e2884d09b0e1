"""Schema 11: ``notification_outbox.lane_seq``, the delivery order fixed under a claim.

See ``state.outbox`` ("Order per subscription"): on PostgreSQL, ids can commit
out of order, so a lane's claim holder numbers the rows it takes in the order
it first saw them committed, and every later attempt keeps that order.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 11


def upgrade(conn: sa.Connection) -> None:
    """Add the nullable ``lane_seq`` column (NULL: not sequenced yet)."""
    conn.execute(sa.text("ALTER TABLE notification_outbox ADD COLUMN lane_seq BIGINT"))
