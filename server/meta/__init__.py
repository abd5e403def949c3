"""Cairn's metadata database: schema, migrations and the ``MetaStore`` service."""

from .models import Device, NamespaceInfo, User
from .store import MetaStore

__all__ = ["Device", "MetaStore", "NamespaceInfo", "User"]
