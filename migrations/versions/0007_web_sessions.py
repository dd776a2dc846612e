"""Server-side sessions for the pages: ``web_sessions``, one row per signed-in browser.

The session cookie now holds only a row's id, so signing out (which revokes the row) ends the
session everywhere, copies of the cookie included. Cookies from before this revision hold an
owner id and no session id: they sign nobody in, and their holders sign in again.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kseg.shared.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", kseg.shared.store.models.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", kseg.shared.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["owners.id"],
            name=op.f("fk_web_sessions_owner_id_owners"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_web_sessions_token_id_api_tokens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_web_sessions_token_id"), ["token_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_token_id"))
        batch_op.drop_index(batch_op.f("ix_web_sessions_owner_id"))
    op.drop_table("web_sessions")
