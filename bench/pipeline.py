"""Throughput of Cairn's chunk pipeline: chunk -> id -> frame (zstd-3 + AES-256-GCM).

Run: ``.venv/bin/python bench/pipeline.py [--size MiB] [--rounds N]``

For each data set (random bytes, and text-like bytes that zstd-3 compresses ~3.5x) it prints
MB/s (10^6 bytes per second of plaintext) for each stage alone and for the whole pipeline
with 1 and 2 worker threads, beside two baselines measured on the same buffer in the same run:
a plain ``bytes`` copy and ``hashlib.sha256``. Each figure is the best of ``--rounds`` runs
(the machine is shared; the best run is the least disturbed one). Goals on the 2-core box:
pipeline with 2 threads >= 550 MB/s on text-like data and >= 1000 MB/s on random data.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard  # noqa: E402

from cairn.core import chunker, frame, ids  # noqa: E402
from cairn.core.keys import DataKey  # noqa: E402
from cairn.core.rechunk import Edit, rechunk  # noqa: E402

MiB = 1 << 20
GOALS = {"random": 1000.0, "text": 550.0}


# --- data ---------------------------------------------------------------------------------


def random_data(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    piece = 16 * MiB  # randbytes cannot make 256 MiB in one call
    return b"".join(rng.randbytes(min(piece, size - o)) for o in range(0, size, piece))


def text_data(size: int, seed: int = 2) -> bytes:
    """Deterministic text-like bytes (zstd-3 packs them ~3.5x): log lines with timestamps,
    levels, numbers and sentences of made-up words drawn with Zipf frequencies, and now and
    then a repeat of an earlier 16 KiB stretch."""
    rng = random.Random(seed)
    syllables = "ka to ri en an sa mo lu de in er on st qu ar el is ti po ne".split()
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(6000)})
    rng.shuffle(words)
    zipf = list(itertools.accumulate(1 / rank for rank in range(1, len(words) + 1)))
    levels = [b"INFO", b"INFO", b"INFO", b"DEBUG", b"WARN", b"ERROR"]
    # A pool of distinct lines, then the buffer as a random sequence of pool lines: building
    # each of millions of lines in Python would take minutes.
    pool = []
    for i in range(1 << 15):
        sentence = " ".join(rng.choices(words, cum_weights=zipf, k=rng.randint(4, 16)))
        pool.append(
            b"2026-%02d-%02d %02d:%02d:%02d %s [%s] %s user=%d bytes=%d\n"
            % (
                1 + i % 12,
                1 + i % 28,
                rng.randrange(24),
                rng.randrange(60),
                rng.randrange(60),
                rng.choice(levels),
                rng.choice(words[:50]).encode(),
                sentence.encode(),
                rng.randrange(10**4),
                rng.randrange(10**7),
            )
        )
    avg_line = sum(map(len, pool)) // len(pool)
    parts: list[bytes] = []
    total = 0
    while total < size:
        block = b"".join(rng.choices(pool, k=(1 << 18) // avg_line))
        if parts and rng.random() < 0.1:
            block = rng.choice(parts)[: 1 << 14] + block
        parts.append(block)
        total += len(block)
    return b"".join(parts)[:size]


# --- measurement --------------------------------------------------------------------------


def best_rate(nbytes: int, fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(wall, CPU) MB/s of the run with the best wall time among ``rounds`` runs of ``fn``.

    CPU time is the whole process's (all threads): on a shared machine a CPU rate well above
    the wall rate of a one-thread stage means the run waited for a core.
    """
    best = (float("inf"), float("inf"))
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return nbytes / best[0] / 1e6, nbytes / max(best[1], 1e-9) / 1e6


def spans(buf: bytes) -> list[tuple[int, int]]:
    return list(chunker.chunk_buffer(buf))


def chunks(buf: bytes, cuts: list[tuple[int, int]]) -> Iterator[memoryview]:
    view = memoryview(buf)
    return (view[o : o + n] for o, n in cuts)


def stage_ids(buf: bytes, cuts: list[tuple[int, int]], key: bytes) -> None:
    for c in chunks(buf, cuts):
        ids.chunk_id(key, c)


def stage_zstd(buf: bytes, cuts: list[tuple[int, int]], level: int) -> None:
    z = zstandard.ZstdCompressor(level=level, write_content_size=True)
    for c in chunks(buf, cuts):
        z.compress(c)


def stage_aes(buf: bytes, cuts: list[tuple[int, int]], key: DataKey) -> None:
    for c in chunks(buf, cuts):
        key.aead.encrypt(bytes(12), c, None)


def pipeline(buf: bytes, dedupe: bytes, key: DataKey, threads: int, level: int) -> int:
    """Chunk in this thread; id + frame each chunk in a pool. Returns total frame bytes."""

    def work(c: memoryview) -> int:
        return len(frame.encode(ids.chunk_id(dedupe, c), c, level=level, key=key))

    out = 0
    view = memoryview(buf)
    with ThreadPoolExecutor(threads) as pool:
        inflight: deque[Future[int]] = deque()
        for o, n in chunker.chunk_buffer(buf):
            inflight.append(pool.submit(work, view[o : o + n]))
            if len(inflight) > 4 * threads:  # bounded memory: a few frames per worker
                out += inflight.popleft().result()
        out += sum(f.result() for f in inflight)
    return out


Row = tuple[str, tuple[float, float]]


def measure(name: str, buf: bytes, rounds: int, level: int) -> list[Row]:
    dedupe, key = ids.new_dedupe_key(), DataKey.generate()
    cuts = spans(buf)
    n = len(buf)
    rows = [
        ("bytes copy (baseline)", best_rate(n, lambda: bytearray(buf), rounds)),
        ("hashlib.sha256 (baseline)", best_rate(n, lambda: hashlib.sha256(buf).digest(), rounds)),
        ("chunking (FastCDC)", best_rate(n, lambda: spans(buf), rounds)),
        ("ids (keyed BLAKE3)", best_rate(n, lambda: stage_ids(buf, cuts, dedupe), rounds)),
        (f"compression (zstd-{level})", best_rate(n, lambda: stage_zstd(buf, cuts, level), rounds)),
        ("encryption (AES-256-GCM)", best_rate(n, lambda: stage_aes(buf, cuts, key), rounds)),
    ]
    sizes: list[int] = []
    for threads in (1, 2):
        rate = best_rate(
            n, lambda t=threads: sizes.append(pipeline(buf, dedupe, key, t, level)), rounds
        )
        rows.append((f"pipeline, {threads} thread{'s' * (threads > 1)}", rate))
    ratio = n / sizes[-1]
    lengths = [c[1] for c in cuts]
    print(
        f"\n{name}: {n // MiB} MiB, {len(cuts)} chunks, mean {n / len(cuts) / MiB:.2f} MiB "
        f"(min {min(lengths) / MiB:.2f}, max {max(lengths) / MiB:.2f}), "
        f"frames {ratio:.2f}x smaller than the plaintext"
    )
    print(rechunk_line(buf, lengths))
    return rows


def rechunk_line(buf: bytes, lengths: list[int]) -> str:
    """Re-chunk after a 4 KiB overwrite in the middle: bytes read and time vs a full chunking."""
    at = len(buf) // 2
    new = b"".join((buf[:at], bytes(4096), buf[at + 4096 :]))
    read = 0

    def reader(offset: int, length: int) -> bytes:
        nonlocal read
        read += length
        return new[offset : offset + length]

    edits = [Edit(at, 4096, 4096)] if at + 4096 <= len(buf) else []
    t0 = time.perf_counter()
    pieces = list(rechunk(lengths, edits, len(new), reader))
    t_re = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = spans(new)
    t_full = time.perf_counter() - t0
    assert [(p.offset, p.length) for p in pieces] == full, "re-chunking disagrees"
    fresh = sum(not p.reused for p in pieces)
    return (
        f"  re-chunk after a 4 KiB overwrite at the middle: read {read / MiB:.2f} MiB, "
        f"{fresh} new chunk(s), {t_re * 1e3:.1f} ms (chunking it all: {t_full * 1e3:.1f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="MiB per data set (default 256)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per figure, best kept")
    ap.add_argument("--level", type=int, default=frame.DEFAULT_LEVEL, help="zstd level (3)")
    args = ap.parse_args(argv)
    if not 1 <= args.size <= 4096 or not 1 <= args.rounds <= 20 or not -5 <= args.level <= 19:
        print("pipeline.py: --size 1-4096 MiB, --rounds 1-20, --level -5..19", file=sys.stderr)
        return 2
    size = args.size * MiB
    results = {}
    for name, make in (("random", random_data), ("text", text_data)):
        results[name] = measure(name, make(size), args.rounds, args.level)
    print(f"\n{'MB/s (wall / per CPU-second)':<30}{'random':>18}{'text':>18}")
    for (label, r), (_, t) in zip(results["random"], results["text"], strict=True):
        print(f"{label:<30}{r[0]:>9.0f} /{r[1]:>6.0f}{t[0]:>11.0f} /{t[1]:>6.0f}")
    two = {name: rows[-1][1][0] for name, rows in results.items()}
    verdict = ", ".join(
        f"{name} {two[name]:.0f} MB/s (goal {goal:.0f}: {'met' if two[name] >= goal else 'MISSED'})"
        for name, goal in GOALS.items()
    )
    print(f"\npipeline with 2 threads, zstd-{args.level}: {verdict}")
    # On a shared machine the wall figure mostly measures the neighbours; the CPU-bound ceiling
    # says what two idle cores would give if the two workers scale (they release the GIL).
    ceiling = ", ".join(f"{name} {2 * rows[-1][1][1]:.0f} MB/s" for name, rows in results.items())
    print(f"ceiling on 2 idle cores (2 x MB per CPU-second of the 2-thread run): {ceiling}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
