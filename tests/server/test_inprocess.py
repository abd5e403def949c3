"""In-process tier (pytest-aiohttp): the real app, MetaStore (SQLite) and local blob store in
this process, for what is simpler to check without a subprocess."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from aiohttp import web

from cairn.core import frame, ids
from cairn.server import cli, config
from cairn.server.app import create_app


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    assert cli.main(["init", str(data)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["user", "add", "alice", "--password-stdin", "--data", str(data)]) == 0
    # cli.main configures logging for a process; hand the test's own levels back
    logging.getLogger("cairn").setLevel(logging.INFO)
    return data


@pytest.mark.asyncio
async def test_login_upload_and_errors_in_process(aiohttp_client, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config.load(data_dir)
    client = await aiohttp_client(create_app(cfg))
    r = await client.post("/api/v1/login", json={"user": "alice", "password": "pw", "device": "d"})
    assert r.status == 200
    session = await r.json()
    auth = {"Authorization": f"Bearer {session['token']}"}
    key = bytes.fromhex(session["dedupe_key"])
    data = b"in process"
    cid = ids.chunk_id(key, data)
    r = await client.put(f"/api/v1/chunks/{cid.hex()}", data=frame.encode(cid, data), headers=auth)
    assert r.status == 201
    r = await client.get(f"/api/v1/chunks/{cid.hex()}", headers=auth)
    assert frame.decode(await r.read(), cid, dedupe_key=key) == data
    r = await client.get("/api/v1/me")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.get("/readyz")
    assert r.status == 200


@pytest.mark.asyncio
@pytest.mark.expect_warnings
async def test_a_bug_is_a_500_json_without_details(aiohttp_client, data_dir: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    app = create_app(config.load(data_dir))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/api/v1/broken", broken, name="broken")
    client = await aiohttp_client(app)
    r = await client.post("/api/v1/login", json={"user": "alice", "password": "pw", "device": "d"})
    token = (await r.json())["token"]
    r = await client.get("/api/v1/broken", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 500
    body = await r.json()
    assert body == {"error": "internal", "message": "internal server error"}
    assert any("secret internals" in (rec.exc_text or "") for rec in caplog.records)
