"""Tables of the metadata database (SQLAlchemy Core).

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test
compares the migrated database with this metadata so the two cannot drift apart.

Model (DESIGN.md, "Metadata model"):

- ``namespaces`` hold a tree each; ``seq`` is the last journal seq allocated in it and
  ``used`` the bytes of data (holes excluded) in the head revisions of its live files.
- ``nodes`` are files, directories and symlinks; ``id`` is the device-chosen node id, unique
  across the whole server. ``seq`` is the seq of the node's last change, so the compacted
  changes feed is a range scan of ``(ns, seq)``. Deleted nodes stay (trash) with the name
  they were last linked under.
- ``names`` are directory entries; a hard-linked file has several rows. Names compare
  byte-exact on both backends (PostgreSQL columns use the "C" collation).
- ``revisions`` keep every content revision of a file; ``blocklist`` is
  ``Blocklist.encode()``. ``chunks.refcount`` counts the revisions whose blocklist names the
  chunk; ``user_chunks`` says which users may see a chunk (dedupe without a side channel).
- ``journal`` is the append-only log per namespace; ``op_results`` make commits idempotent
  per ``(device, op_id)``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

# Byte order on both backends: SQLite's default BINARY collation already compares UTF-8
# bytes; PostgreSQL needs "C" or listing order and name equality follow the locale.
NameText = Text().with_variant(Text(collation="C"), "postgresql")
NodeId = String(32)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("quota", BigInteger, nullable=True),
    Column("home_ns", Integer, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_ns", BigInteger, nullable=False),
)

namespaces = Table(
    "namespaces",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("root", NodeId, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", NodeId, primary_key=True),
    Column("ns", Integer, ForeignKey("namespaces.id"), nullable=False),
    Column("type", String(8), nullable=False),
    Column("mode", Integer, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("rev", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("target", Text, nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("deleted_ns", BigInteger, nullable=True),
    Column("last_parent", NodeId, nullable=True),
    Column("last_name", NameText, nullable=True),
    Column("seq", BigInteger, nullable=False),
    Index("ix_nodes_ns_seq", "ns", "seq"),
    Index("ix_nodes_ns_deleted", "ns", "deleted"),
)

names = Table(
    "names",
    metadata,
    Column("ns", Integer, nullable=False),
    Column("parent", NodeId, nullable=False),
    Column("name", NameText, nullable=False),
    Column("node", NodeId, ForeignKey("nodes.id"), nullable=False),
    PrimaryKeyConstraint("ns", "parent", "name", name="pk_names"),
    Index("ix_names_node", "node"),
)

xattrs = Table(
    "xattrs",
    metadata,
    Column("node", NodeId, ForeignKey("nodes.id"), nullable=False),
    Column("name", NameText, nullable=False),
    Column("value", LargeBinary, nullable=False),
    PrimaryKeyConstraint("node", "name", name="pk_xattrs"),
)

revisions = Table(
    "revisions",
    metadata,
    Column("node", NodeId, ForeignKey("nodes.id"), nullable=False),
    Column("rev", BigInteger, nullable=False),
    Column("blocklist", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("mode", Integer, nullable=False),
    Column("device_id", Integer, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("node", "rev", name="pk_revisions"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", LargeBinary, primary_key=True),
    Column("plain_len", BigInteger, nullable=False),
    Column("stored_len", BigInteger, nullable=False),
    Column("refcount", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)

user_chunks = Table(
    "user_chunks",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("chunk", LargeBinary, ForeignKey("chunks.id"), nullable=False),
    PrimaryKeyConstraint("user_id", "chunk", name="pk_user_chunks"),
)

journal = Table(
    "journal",
    metadata,
    Column("ns", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("node", NodeId, nullable=False),
    Column("op", String(16), nullable=False),
    Column("device_id", Integer, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("ns", "seq", name="pk_journal"),
)

op_results = Table(
    "op_results",
    metadata,
    Column("device_id", Integer, nullable=False),
    Column("op_id", String(64), nullable=False),
    Column("ns", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("result", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    PrimaryKeyConstraint("device_id", "op_id", name="pk_op_results"),
)
