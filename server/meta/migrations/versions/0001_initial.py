"""Initial schema: users, devices, namespaces, nodes, names, xattrs, revisions, chunks,
user_chunks, journal, op_results.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types as of this revision (not imported from schema.py, so
# later schema changes do not rewrite history).
NameText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
NodeId = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("quota", sa.BigInteger, nullable=True),
        sa.Column("home_ns", sa.Integer, nullable=True),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_devices_user_id", "devices", ["user_id"])
    op.create_table(
        "namespaces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("root", NodeId, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_namespaces_owner_id", "namespaces", ["owner_id"])
    op.create_table(
        "nodes",
        sa.Column("id", NodeId, primary_key=True),
        sa.Column("ns", sa.Integer, sa.ForeignKey("namespaces.id"), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("mode", sa.Integer, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("deleted_ns", sa.BigInteger, nullable=True),
        sa.Column("last_parent", NodeId, nullable=True),
        sa.Column("last_name", NameText, nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_nodes_ns_seq", "nodes", ["ns", "seq"])
    op.create_index("ix_nodes_ns_deleted", "nodes", ["ns", "deleted"])
    op.create_table(
        "names",
        sa.Column("ns", sa.Integer, nullable=False),
        sa.Column("parent", NodeId, nullable=False),
        sa.Column("name", NameText, nullable=False),
        sa.Column("node", NodeId, sa.ForeignKey("nodes.id"), nullable=False),
        sa.PrimaryKeyConstraint("ns", "parent", "name", name="pk_names"),
    )
    op.create_index("ix_names_node", "names", ["node"])
    op.create_table(
        "xattrs",
        sa.Column("node", NodeId, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("name", NameText, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("node", "name", name="pk_xattrs"),
    )
    op.create_table(
        "revisions",
        sa.Column("node", NodeId, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False),
        sa.Column("blocklist", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("mode", sa.Integer, nullable=False),
        sa.Column("device_id", sa.Integer, nullable=True),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("node", "rev", name="pk_revisions"),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.LargeBinary, primary_key=True),
        sa.Column("plain_len", sa.BigInteger, nullable=False),
        sa.Column("stored_len", sa.BigInteger, nullable=False),
        sa.Column("refcount", sa.BigInteger, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "user_chunks",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("chunk", sa.LargeBinary, sa.ForeignKey("chunks.id"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "chunk", name="pk_user_chunks"),
    )
    op.create_table(
        "journal",
        sa.Column("ns", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("node", NodeId, nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("device_id", sa.Integer, nullable=True),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("ns", "seq", name="pk_journal"),
    )
    op.create_table(
        "op_results",
        sa.Column("device_id", sa.Integer, nullable=False),
        sa.Column("op_id", sa.String(64), nullable=False),
        sa.Column("ns", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "op_id", name="pk_op_results"),
    )


def downgrade() -> None:
    for table in ("op_results", "journal", "user_chunks", "chunks", "revisions", "xattrs",
                  "names", "nodes", "namespaces", "devices", "users"):  # fmt: skip
        op.drop_table(table)
