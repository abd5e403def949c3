"""The sync agent: the trio tasks of a mount that keep it in step with the server.

``SyncAgent.run`` (started with ``nursery.start``) runs two loops until cancelled:

- the **pusher loop** waits for ``wake()`` or a short tick (``PUSH_TICK``: a look at the
  outbox that does not block folding), then drains the outbox (``Pusher.push_once``) and
  pulls right after;
- the **puller loop** pulls at start, whenever ``wake_pull()`` is called — by the hint
  listener (``hints.py``: WebSocket, long-poll fallback) — and every ``pull_interval``
  seconds as a safety net;
- the **hint listener**.

Both share one notion of *online*: any ``Unavailable`` marks the server unreachable and the
loops back off (exponential with jitter, capped at a few seconds so a returning server is
noticed quickly); the first success marks it reachable again and wakes the pusher, so the
outbox drains on reconnect. While offline, ``RemoteSource.fetch`` fails at once instead of
waiting for a connect timeout, so reading uncached data gives EIO quickly.

Refused ops become conflicted copies (``conflicts.py``); a mass deletion from the server
is held by the puller until ``confirm_deletes()``.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import trio

from cairn.core.errors import CairnError, NotFound, Unauthenticated, Unavailable

from ..client import Client
from .backoff import Backoff
from .hints import HintListener
from .puller import Puller
from .pusher import Pusher
from .uploader import Uploader

log = logging.getLogger("cairn.fs.sync")

PULL_INTERVAL = 60.0  # safety pull; hints wake the puller at once
PUSH_TICK = 0.05  # the pusher looks at the outbox this often (nothing calls wake() on a seal)
OFFLINE_CAP = 4.0  # longest wait between reconnect attempts
ME_INTERVAL = 30.0  # how often the quota shown by statfs is refreshed
ECHO_LULL_MIN = 64  # an echo of at least this many of our ops waits for a lull (see _pull)
FETCH_RETRY_AFTER = 2.0  # while offline, fetches fail fast for this long after a failure


class SyncAgent:
    def __init__(
        self,
        store: Any,
        cache: Any,
        client: Client,
        *,
        ns: int,
        parked_file: Any,
        pull_interval: float = PULL_INTERVAL,
        device: str = "device",
    ) -> None:
        self.store = store
        self.cache = cache
        self.client = client
        self.ns = ns
        self.pull_interval = pull_interval
        self.online: bool | None = None  # None: not tried yet
        self.last_sync: float | None = None
        self.last_failure: float = 0.0
        self.errors: collections.deque[tuple[float, str]] = collections.deque(maxlen=10)
        self.uploader = Uploader(client, self._read_frame, read_frames=self._read_frames)
        lock = trio.Lock()  # commit+settle vs. fetch+apply (see pusher.py)
        self.pusher = Pusher(
            store, client, self.uploader, ns=ns, parked_file=parked_file,
            on_committed=self._clean, lock=lock, device=device, on_applied=self._invalidate,
        )  # fmt: skip
        self.puller = Puller(store, client, self._invalidate, lock=lock)
        self.pusher.skipped = self.puller.skipped
        self.hints = HintListener(
            client, store.cursor, self.wake_pull,
            on_online=self._came_online, on_offline=self._went_offline,
        )  # fmt: skip
        self._push_wake = trio.Event()
        self._pull_wake = trio.Event()
        self._idle = trio.Event()  # set whenever a push round found the outbox empty
        self.invalidate_hook: Any = None  # set by the mount: async fn(Changes)
        self.quota_hook: Any = None  # set by the mount: fn(total | None, used)
        self._last_me = 0.0
        self.downloads = Downloads()  # counted by RemoteSource

    # --- hooks for the ops layer and the mount --------------------------------------------

    def set_activity(self, activity: Any) -> None:
        """``activity()``: a counter the file system bumps on the requests it serves; the
        pusher waits for it to rest before a round (bounded, see ``Pusher._gather``)."""
        self.pusher.activity = activity

    def wake(self) -> None:
        """Something was queued: push soon. Safe to call from the trio thread at any time."""
        self._push_wake.set()

    def wake_pull(self) -> None:
        self._pull_wake.set()

    def confirm_deletes(self) -> bool:
        """``cairn sync --confirm-deletes``: the next pull applies held deletions."""
        held = self.puller.confirm_deletes()
        self._pull_wake.set()
        return held

    async def _read_frame(self, cid: bytes) -> bytes:
        frame: bytes = await trio.to_thread.run_sync(self.cache.plain_frame, cid)
        return frame

    async def _read_frames(self, cids: list[bytes]) -> list[bytes]:
        # one thread hop for a window of (small) frames instead of one per chunk
        cache = self.cache
        frames: list[bytes] = await trio.to_thread.run_sync(
            lambda: [cache.plain_frame(c) for c in cids]
        )
        return frames

    async def _clean(self, cids: list[bytes]) -> None:
        # Committed chunks are on the server: they may be evicted from now on.
        await trio.to_thread.run_sync(self.cache.mark_clean, cids)

    async def _invalidate(self, changes: Any) -> None:
        if self.invalidate_hook is not None:
            await self.invalidate_hook(changes)

    # --- online / offline -----------------------------------------------------------------

    def _went_offline(self, err: Exception) -> None:
        self.last_failure = time.monotonic()
        if self.online is not False:
            log.warning("server unreachable, working offline: %s", err)
        self.online = False

    def _came_online(self) -> None:
        if self.online is False:
            log.info("server reachable again; uploading pending changes")
            self._push_wake.set()
            self.hints.kick()
        self.online = True
        self.last_sync = time.time()

    def _error(self, what: str, err: Exception) -> None:
        self.errors.append((time.time(), f"{what}: {err}"))
        log.error("%s failed: %s", what, err)

    # --- the loops ------------------------------------------------------------------------

    def _echo_only(self) -> bool:
        """True when the newest change the server hinted is one our own push made: a pull
        now would only bring back the echo of our commits (and settle their revisions).
        Hints of another namespace, or of a seq past our own commits, are news."""
        seen = self.hints.newest()
        return set(seen) <= {self.ns} and seen.get(self.ns, 0) <= self.pusher.own_seq

    async def _pull(self) -> None:
        if self.pusher.unpulled >= ECHO_LULL_MIN and self.pusher.own_seq and self._echo_only():
            # The echo of a big push (1,000 nodes: tens of ms on the trio thread) waits for
            # a pause in file system requests, at most GATHER_MAX; other devices' changes
            # (a newer hint) are pulled at once. A small echo is pulled at once too: the
            # push loop waits for it, so a lull there would delay the next edit's push.
            await self.pusher.lull()
        self.pusher.unpulled = 0
        await self.puller.pull_once()
        self._came_online()
        if self.quota_hook is not None and time.monotonic() - self._last_me > ME_INTERVAL:
            me = await self.client.me()
            self._last_me = time.monotonic()
            quota = me.get("quota")
            self.quota_hook(quota if isinstance(quota, int) else None, int(me.get("used") or 0))

    async def _push(self) -> None:
        await self.pusher.push_once()
        self._came_online()

    async def _loop(self, step: Any, wake_attr: str, interval: float, what: str) -> None:
        backoff = Backoff(0.25, OFFLINE_CAP)
        while True:
            delay = interval
            try:
                await step()
                backoff.reset()
            except Unavailable as e:
                self._went_offline(e)
                delay = backoff.next_delay()
            except Unauthenticated as e:
                self._error(what, e)
                delay = 30.0  # the token was revoked: nothing to do until a new login
            except (CairnError, OSError) as e:
                self._error(what, e)
                delay = backoff.next_delay() * 4
            except Exception as e:  # noqa: BLE001 - a sync bug must not take the mount down
                log.exception("%s failed unexpectedly; retrying later", what)
                self.errors.append((time.time(), f"{what}: internal error {e!r}"))
                delay = OFFLINE_CAP * 4
            with trio.move_on_after(delay):
                await getattr(self, wake_attr).wait()
            setattr(self, wake_attr, trio.Event())

    async def _push_step(self) -> None:
        if self.store.outbox_peek(1, sending=False):
            await self._push()
            await self._pull()
        self._idle.set()
        self._idle = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._loop, self._pull, "_pull_wake", self.pull_interval, "pull")
            nursery.start_soon(self._loop, self._push_step, "_push_wake", PUSH_TICK, "push")
            nursery.start_soon(self.hints.run)
            task_status.started()

    # --- control-socket commands ----------------------------------------------------------

    def pending(self) -> dict[str, int]:
        """Queued changes: ops, distinct files with content to upload, bytes of content."""
        entries = self.store.outbox_peek(None)
        files: dict[str, int] = {}
        for e in entries:
            bl = getattr(e.op, "blocklist", None)
            if bl is not None:
                files[e.op.node] = sum(n for cid, n in bl if cid is not None)
        return {"ops": len(entries), "files": len(files), "bytes": sum(files.values())}

    async def status(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "hints": self.hints.status(),
            "last_sync": self.last_sync,
            "pending": self.pending(),
            "parked": self.pusher.parked,
            "conflicts": [c.to_json() for c in self.pusher.resolver.recent],
            "held_deletes": self.puller.held,
            "cache_used": self.cache.used,
            "cache_limit": self.cache.limit,
            "cache_dirty": self.cache.dirty_bytes,
            "uploaded_chunks": self.uploader.uploaded_chunks,
            "upload": self.pusher.upload_progress(),
            "download": self.downloads.progress(),
            "pulled": self.puller.applied,
            "errors": [[t, m] for t, m in self.errors],
        }

    async def drain(self, seconds: float, seal: Any = None) -> dict[str, Any]:
        """Seal open files (``seal``: async callable from the ops layer), then wait up to
        ``seconds`` s for the outbox to empty."""
        if seal is not None:
            await seal()
        with trio.move_on_after(seconds):
            for _ in range(1_000_000):
                if not self.store.outbox_peek(1):
                    return {"drained": True, "pending": 0, "reason": ""}
                self.wake()
                await self._idle.wait()
        n = self.pending()["ops"]
        if n == 0:
            return {"drained": True, "pending": 0, "reason": ""}
        reason = "server unreachable" if self.online is False else f"{n} changes pending"
        return {"drained": False, "pending": n, "reason": reason}


class Downloads:
    """Chunk fetches of the mount (reads of data not cached), for ``cairn status``."""

    def __init__(self) -> None:
        self.inflight = 0
        self.chunks = 0
        self.bytes = 0
        self.failed = 0

    def progress(self) -> dict[str, int]:
        return {"inflight": self.inflight, "chunks": self.chunks, "bytes": self.bytes,
                "failed": self.failed}  # fmt: skip


class RemoteSource:
    """The ``ChunkSource`` of the cache: chunks from the server. Fails fast while offline."""

    def __init__(self, client: Client, agent: SyncAgent) -> None:
        self._client = client
        self._agent = agent

    async def fetch(self, cid: bytes) -> bytes:
        a = self._agent
        if a.online is False and time.monotonic() - a.last_failure < FETCH_RETRY_AFTER:
            raise Unavailable(f"chunk {cid.hex()[:12]} is not cached and the server is unreachable")
        dl = a.downloads
        dl.inflight += 1
        try:
            frame = await self._fetch(cid)
        except BaseException:
            dl.failed += 1
            raise
        else:
            dl.chunks += 1
            dl.bytes += len(frame)
            return frame
        finally:
            dl.inflight -= 1

    async def _fetch(self, cid: bytes) -> bytes:
        a = self._agent
        try:
            with trio.fail_after(20):
                frame = await self._client.get_chunk(cid.hex())
        except trio.TooSlowError:
            err = Unavailable(f"fetching chunk {cid.hex()[:12]} timed out")
            a._went_offline(err)
            raise err from None
        except Unavailable as e:
            a._went_offline(e)
            log.error("cannot read chunk %s: %s", cid.hex()[:12], e)
            raise
        except NotFound:
            log.error("server does not have chunk %s", cid.hex()[:12])
            raise
        return frame
