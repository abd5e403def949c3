"""Users, devices and their tokens.

Password and token hashes are computed by the caller (Argon2id for passwords, a hash of the
random bearer token for devices); this module only stores and looks them up. Adding a user
also creates the user's home namespace with its root directory (journal seq 1), so a new
device's first changes pull already lists the root.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cairn.core.errors import AlreadyExists, InvalidArgument, NotFound

from .models import Device, User
from .schema import devices, journal, namespaces, nodes, users

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_DEVICE_NAME = 128


def check_user_name(name: object) -> str:
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise InvalidArgument(
            "user name must be 1..64 characters of letters, digits, '.', '_', '@', '-'"
            " starting with a letter or digit"
        )
    return name


def check_device_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > MAX_DEVICE_NAME
        or not name.isprintable()
    ):
        raise InvalidArgument(f"device name must be 1..{MAX_DEVICE_NAME} printable characters")
    return name


def _check_quota(quota: int | None) -> int | None:
    if quota is not None and (type(quota) is not int or quota < 0):
        raise InvalidArgument("quota must be a non-negative number of bytes or none")
    return quota


_USER_COLUMNS = (
    users.c.id,
    users.c.name,
    users.c.password_hash,
    users.c.quota,
    users.c.home_ns,
    namespaces.c.root,
    users.c.created_ns,
)


def _user_select() -> Select[Any]:
    return select(*_USER_COLUMNS).select_from(
        users.join(namespaces, namespaces.c.id == users.c.home_ns)
    )


def _user(row: Any) -> User:
    return User(row.id, row.name, row.password_hash, row.quota, row.home_ns, row.root,
                row.created_ns)  # fmt: skip


def add_user(conn: Connection, name: str, password_hash: str, quota: int | None) -> User:
    check_user_name(name)
    _check_quota(quota)
    now = time.time_ns()
    root = os.urandom(16).hex()
    try:
        user_id = conn.execute(
            insert(users)
            .values(name=name, password_hash=password_hash, quota=quota, created_ns=now)
            .returning(users.c.id)
        ).scalar_one()
    except IntegrityError:
        raise AlreadyExists(f"user {name!r} already exists") from None
    ns = conn.execute(
        insert(namespaces)
        .values(
            owner_id=user_id, kind="home", name="home", root=root, seq=1, used=0, created_ns=now
        )  # fmt: skip
        .returning(namespaces.c.id)
    ).scalar_one()
    conn.execute(
        insert(nodes).values(
            id=root,
            ns=ns,
            type="dir",
            mode=0o755,
            mtime_ns=now,
            rev=1,
            size=0,
            used=0,
            target=None,
            deleted=False,
            seq=1,
        )  # fmt: skip
    )
    conn.execute(
        insert(journal).values(
            ns=ns, seq=1, node=root, op="mkroot", device_id=None, created_ns=now
        )  # fmt: skip
    )
    conn.execute(update(users).where(users.c.id == user_id).values(home_ns=ns))
    return User(user_id, name, password_hash, quota, ns, root, now)


_GET_USER = _user_select().where(users.c.name == bindparam("name"))
_GET_USER_BY_ID = _user_select().where(users.c.id == bindparam("id"))


def get_user(conn: Connection, name: str) -> User | None:
    row = conn.execute(_GET_USER, {"name": name}).first()
    return None if row is None else _user(row)


def get_user_by_id(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(_GET_USER_BY_ID, {"id": user_id}).first()
    return None if row is None else _user(row)


def list_users(conn: Connection) -> list[User]:
    return [_user(r) for r in conn.execute(_user_select().order_by(users.c.name))]


def set_password(conn: Connection, name: str, password_hash: str) -> None:
    res = conn.execute(
        update(users).where(users.c.name == name).values(password_hash=password_hash)
    )
    if res.rowcount == 0:
        raise NotFound(f"no user {name!r}")


def set_quota(conn: Connection, name: str, quota: int | None) -> None:
    _check_quota(quota)
    res = conn.execute(update(users).where(users.c.name == name).values(quota=quota))
    if res.rowcount == 0:
        raise NotFound(f"no user {name!r}")


_DEVICE_COLUMNS = (
    devices.c.id,
    devices.c.user_id,
    users.c.name.label("user_name"),
    devices.c.name,
    devices.c.revoked,
    devices.c.created_ns,
)


def _device(row: Any) -> Device:
    return Device(row.id, row.user_id, row.user_name, row.name, bool(row.revoked),
                  row.created_ns)  # fmt: skip


def _device_select() -> Select[Any]:
    return select(*_DEVICE_COLUMNS).select_from(
        devices.join(users, users.c.id == devices.c.user_id)
    )


# Run on every authenticated request: built once, compiled once.
_BY_TOKEN = _device_select().where(
    devices.c.token_hash == bindparam("token"), devices.c.revoked.is_(False)
)


def add_device(conn: Connection, user_id: int, name: str, token_hash: bytes) -> Device:
    check_device_name(name)
    now = time.time_ns()
    user_name = conn.execute(select(users.c.name).where(users.c.id == user_id)).scalar()
    if user_name is None:
        raise NotFound(f"no user with id {user_id}")
    try:
        device_id = conn.execute(
            insert(devices)
            .values(
                user_id=user_id, name=name, token_hash=token_hash, revoked=False, created_ns=now
            )  # fmt: skip
            .returning(devices.c.id)
        ).scalar_one()
    except IntegrityError:
        raise AlreadyExists("a device with this token already exists") from None
    return Device(device_id, user_id, user_name, name, False, now)


def device_by_token(conn: Connection, token_hash: bytes) -> Device | None:
    row = conn.execute(_BY_TOKEN, {"token": token_hash}).first()
    return None if row is None else _device(row)


def list_devices(conn: Connection, user_id: int) -> list[Device]:
    rows = conn.execute(_device_select().where(devices.c.user_id == user_id).order_by(devices.c.id))
    return [_device(r) for r in rows]


def revoke_device(conn: Connection, user_id: int, device: str) -> int:
    """Revoke the user's live devices named ``device``; if none has that name and it is a
    number, the live device with that id. Returns how many were revoked."""
    live = (devices.c.user_id == user_id, devices.c.revoked.is_(False))
    res = conn.execute(update(devices).where(*live, devices.c.name == device).values(revoked=True))
    if res.rowcount == 0 and device.isdigit():
        return revoke_device_id(conn, user_id, int(device))
    return int(res.rowcount)


def revoke_device_id(conn: Connection, user_id: int, device_id: int) -> int:
    """Revoke exactly the device ``device_id`` of this user (logout); 0 or 1."""
    res = conn.execute(
        update(devices)
        .where(
            devices.c.user_id == user_id, devices.c.revoked.is_(False), devices.c.id == device_id
        )
        .values(revoked=True)
    )
    return int(res.rowcount)


def usage(conn: Connection, user_id: int) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(namespaces.c.used), 0)).where(
            namespaces.c.owner_id == user_id
        )
    ).scalar()
    return int(total or 0)
