"""Users, devices and tokens."""

from __future__ import annotations

import os

import pytest

from cairn.core.errors import AlreadyExists, InvalidArgument, NotFound
from cairn.server.meta import MetaStore

pytestmark = pytest.mark.anyio


async def test_add_user_creates_home_namespace_with_root(store: MetaStore) -> None:
    user = await store.add_user("alice", "hash-a", 10_000)
    assert (user.name, user.password_hash, user.quota) == ("alice", "hash-a", 10_000)
    assert await store.get_user("alice") == user
    assert await store.get_user_by_id(user.id) == user
    assert [n.to_json() for n in await store.namespaces(user.id)] == [
        {"ns": user.home_ns, "root": user.home_root, "name": "home"}
    ]
    root = await store.get_node(user.id, user.home_ns, user.home_root)
    assert (root["type"], root["names"], root["deleted"], root["seq"]) == ("dir", [], False, 1)
    assert await store.seqs(user.id) == {user.home_ns: 1}
    assert await store.usage(user.id) == 0


async def test_users_are_unique_and_names_checked(store: MetaStore) -> None:
    await store.add_user("alice", "h", None)
    with pytest.raises(AlreadyExists):
        await store.add_user("alice", "other", None)
    for bad in ["", "a b", "../x", "x" * 65, "-lead"]:
        with pytest.raises(InvalidArgument):
            await store.add_user(bad, "h", None)
    with pytest.raises(InvalidArgument, match="quota"):
        await store.add_user("bob", "h", -1)
    assert [u.name for u in await store.list_users()] == ["alice"]
    assert await store.get_user("nobody") is None


async def test_set_password(store: MetaStore) -> None:
    await store.add_user("alice", "old", None)
    await store.set_password("alice", "new")
    user = await store.get_user("alice")
    assert user is not None and user.password_hash == "new"
    with pytest.raises(NotFound):
        await store.set_password("nobody", "x")


async def test_devices_tokens_and_revocation(store: MetaStore) -> None:
    alice = await store.add_user("alice", "h", None)
    bob = await store.add_user("bob", "h", None)
    t1, t2, t3 = os.urandom(32), os.urandom(32), os.urandom(32)
    d1 = await store.add_device(alice.id, "laptop", t1)
    d2 = await store.add_device(alice.id, "laptop", t2)  # same name again: a new token
    d3 = await store.add_device(bob.id, "laptop", t3)
    assert d1.user_name == "alice" and d1.id != d2.id
    assert await store.device_by_token(t1) == d1
    assert await store.device_by_token(os.urandom(32)) is None
    assert [d.id for d in await store.list_devices(alice.id)] == [d1.id, d2.id]
    with pytest.raises(AlreadyExists):
        await store.add_device(bob.id, "phone", t1)
    with pytest.raises(InvalidArgument):
        await store.add_device(alice.id, "", os.urandom(32))
    with pytest.raises(NotFound):
        await store.add_device(9999, "x", os.urandom(32))

    # By name: both of alice's "laptop" tokens, not bob's.
    assert await store.revoke_device(alice.id, "laptop") == 2
    assert await store.device_by_token(t1) is None
    assert await store.device_by_token(t2) is None
    assert await store.device_by_token(t3) == d3
    assert await store.revoke_device(alice.id, "laptop") == 0
    assert [d.revoked for d in await store.list_devices(alice.id)] == [True, True]
    # By id.
    assert await store.revoke_device(alice.id, str(d3.id)) == 0  # bob's device, not alice's
    assert await store.revoke_device(bob.id, str(d3.id)) == 1
    assert await store.device_by_token(t3) is None


async def test_revoke_by_id_is_exact(store: MetaStore) -> None:
    alice = await store.add_user("alice", "h", None)
    t1, t2 = os.urandom(32), os.urandom(32)
    d1 = await store.add_device(alice.id, "laptop", t1)
    # A device whose *name* is the other one's id must survive a logout of that id.
    d2 = await store.add_device(alice.id, str(d1.id), t2)
    assert await store.revoke_device_id(alice.id, d1.id) == 1
    assert await store.device_by_token(t1) is None
    assert await store.device_by_token(t2) == d2
    assert await store.revoke_device_id(alice.id, d1.id) == 0
    # By name first: the numeric name matches the device named so, not the id.
    assert await store.revoke_device(alice.id, str(d1.id)) == 1
    assert await store.device_by_token(t2) is None
