"""The drive's HTTP client of the server API (docs/api.md), for trio.

``Client`` knows requests and responses, nothing about reconciliation. Every call has a
timeout. Failures are translated here, once, into ``cairn.core.errors``:

- the server cannot be reached, times out, or answers 5xx/503 → ``Unavailable`` (retryable);
- a non-2xx answer with a JSON ``{"error": code}`` body → the ``CairnError`` subclass whose
  ``code`` matches (``Unauthenticated``, ``NotFound``, ``RateLimited`` ...), or a plain
  ``CairnError`` carrying the code for codes this side does not know;
- a 2xx answer that is not the documented JSON → ``Unavailable`` (a proxy in the way, a
  server mid-restart), because retrying later is the right reaction.

Nothing here retries; callers (the sync agent) decide. All methods are idempotent on the
server side except ``login`` (each login mints a new token).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from cairn.core import chunkbatch, errors
from cairn.core.errors import CairnError, RateLimited, Unavailable

log = logging.getLogger("cairn.fs.client")

API = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Chunk bodies are up to 16 MiB; allow for a slow link without hanging forever.
CHUNK_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


def _codes() -> dict[str, type[CairnError]]:
    table: dict[str, type[CairnError]] = {}
    stack: list[type[CairnError]] = [CairnError]
    while stack:
        cls = stack.pop()
        table.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return table


_BY_CODE = _codes()


class RemoteError(CairnError):
    """An error code from the server that this client has no class for."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_from_response(resp: httpx.Response) -> CairnError:
    """The typed error for a non-2xx answer."""
    try:
        body = resp.json()
        code, message = str(body["error"]), str(body.get("message", ""))
    except (ValueError, KeyError, TypeError):
        code, message = "", resp.reason_phrase or f"HTTP {resp.status_code}"
    if resp.status_code >= 500 or code == "unavailable":
        return Unavailable(f"server answered {resp.status_code}: {message or code}")
    cls = _BY_CODE.get(code)
    if cls is None and resp.status_code == 401:
        cls = errors.Unauthenticated
    if cls is None and resp.status_code == 429:
        cls = RateLimited
    err: CairnError = cls(message or code) if cls is not None else RemoteError(code, message)
    if isinstance(err, RateLimited):
        try:
            err.retry_after = float(resp.headers.get("Retry-After", "1"))  # type: ignore[attr-defined]
        except ValueError:
            err.retry_after = 1.0  # type: ignore[attr-defined]
    return err


class Client:
    """One server, one (optional) bearer token. Use as ``async with Client(...) as c``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"User-Agent": "cairn-drive/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport --------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TimeoutException as e:
            raise Unavailable(f"server {self.base_url} timed out ({type(e).__name__})") from None
        except (httpx.HTTPError, OSError) as e:  # transport, protocol, decoding, redirects
            raise Unavailable(
                f"cannot reach server {self.base_url}: {e or type(e).__name__}"
            ) from None
        if resp.status_code >= 300:
            raise error_from_response(resp)
        return resp

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self._request(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise Unavailable(f"server answered {method} {path} with non-JSON") from None

    # --- session ----------------------------------------------------------------------------

    async def healthz(self) -> bool:
        """True when the server answers its health check; never raises."""
        try:
            await self._request("GET", "/healthz", timeout=httpx.Timeout(3.0))
        except CairnError:
            return False
        return True

    async def login(self, user: str, password: str, device: str) -> dict[str, Any]:
        body = {"user": user, "password": password, "device": device}
        result: dict[str, Any] = await self._json("POST", f"{API}/login", json=body)
        return result

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"{API}/me")
        return result

    # --- chunks -----------------------------------------------------------------------------

    async def missing_chunks(self, ids: list[str]) -> list[str]:
        """Which of ``ids`` (≤ 1000 hex ids) the caller must upload."""
        body = await self._json("POST", f"{API}/chunks/missing", json={"ids": ids})
        return [str(i) for i in body["missing"]]

    async def put_chunk(self, cid: str, frame: bytes) -> bool:
        """Upload one plain frame; True when the server stored a new copy. Idempotent."""
        resp = await self._request(
            "PUT",
            f"{API}/chunks/{cid}",
            content=frame,
            headers={"Content-Type": "application/octet-stream"},
            timeout=CHUNK_TIMEOUT,
        )
        return resp.status_code == 201

    async def put_chunks(self, records: list[tuple[bytes, bytes]]) -> list[bool]:
        """Upload many ``(raw chunk id, plain frame)`` in one request (``chunks/batch``:
        1..``chunkbatch.MAX_RECORDS`` records, body within the server's chunk body limit, else
        ``TooLarge``). Returns, in order, True for each record the server stored a new copy
        of. Idempotent. A record the server refused raises its typed error (``IdMismatch``,
        ``FrameCorrupt`` ...) naming the chunk; the other records are stored all the same.
        """
        body = chunkbatch.encode(records)
        answer = await self._json(
            "POST",
            f"{API}/chunks/batch",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=CHUNK_TIMEOUT,
        )
        try:
            results = answer["results"]
            ok = len(results) == len(records) and all(
                r["id"] == cid.hex() for r, (cid, _) in zip(results, records, strict=False)
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise Unavailable("server answered a chunk batch with the wrong results")
        for r in results:
            if "error" in r:
                code, message = str(r["error"]), str(r.get("message", ""))
                cls = _BY_CODE.get(code)
                text = f"chunk {r['id']}: {message or code}"
                raise cls(text) if cls is not None else RemoteError(code, text)
        return [bool(r.get("stored")) for r in results]

    async def get_chunk(self, cid: str) -> bytes:
        """The plain frame of chunk ``cid`` (unverified: the caller decodes with its id)."""
        resp = await self._request("GET", f"{API}/chunks/{cid}", timeout=CHUNK_TIMEOUT)
        return resp.content

    # --- metadata ---------------------------------------------------------------------------

    async def commit(self, ns: int, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one batch (≤ 1000 ops); one result per op, in order."""
        body = await self._json("POST", f"{API}/ns/{ns}/commit", json={"ops": ops})
        results: list[dict[str, Any]] = body["results"]
        if len(results) != len(ops):
            raise Unavailable("server answered a commit with the wrong number of results")
        return results

    async def changes(self, cursor: str | None, limit: int = 500) -> dict[str, Any]:
        """One page of the changes feed: ``{"entries", "cursor", "has_more"}``."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = await self._json("GET", f"{API}/changes", params=params)
        return result

    async def node(self, ns: int, node_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"{API}/ns/{ns}/nodes/{node_id}")
        return result

    async def children(
        self, ns: int, node_id: str, cursor: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """One page of a directory's children: ``{"entries": [{"name", "node"}], "cursor",
        "has_more"}`` (node objects without blocklist)."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        path = f"{API}/ns/{ns}/nodes/{node_id}/children"
        result: dict[str, Any] = await self._json("GET", path, params=params)
        return result

    async def hints_poll(self, cursor: str | None, timeout_s: int = 30) -> dict[str, Any]:
        """Long-poll for change hints: ``{"changed": bool, "ns": {ns: seq}}`` as soon as the
        feed is past ``cursor`` or after ``timeout_s`` seconds (≤ 60)."""
        params: dict[str, Any] = {"timeout": timeout_s}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = await self._json(
            "GET", f"{API}/hints/poll", params=params, timeout=timeout_s + 15
        )
        return result
