"""Scrape blackbox_exporter's /probe for every target once per interval, as a Prometheus with
one scrape job per target would (the multi-target pattern), and count the answers.

    python bench/monitor_scale/scraper.py CONFIG_JSON

CONFIG_JSON: {"port", "targets_file", "target_port", "interval", "warmup", "duration",
"connections", "module"}. Target i is due at phase i/N of every interval; a dispatcher
queues due targets every TICK_S, and `connections` workers, each on one HTTP/1.1 keep-alive
connection, take them in turn (a scrape slower than its interval just queues). Prints
``begin`` and ``end`` (flushed) around the measuring window, then one JSON line: scrapes
started and answered in the window, probe_success 1 / 0, HTTP errors, and how late scrapes
started (queue wait) as p50/p99/max.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

TICK_S = 0.005


async def scrape(config: dict[str, Any]) -> dict[str, Any]:
    addresses = Path(config["targets_file"]).read_text().split()
    count, interval = len(addresses), float(config["interval"])
    warmup, duration = float(config["warmup"]), float(config["duration"])
    module, target_port = config["module"], int(config["target_port"])
    paths = [f"/probe?module={module}&target=%5B{a}%5D:{target_port}".encode()
             if ":" in a else f"/probe?module={module}&target={a}:{target_port}".encode()
             for a in addresses]
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    counts = {"started": 0, "answered": 0, "success": 0, "failure": 0, "http_errors": 0}
    waits: list[float] = []
    measuring = False
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(config["port"]))
        while True:
            index, due = await queue.get()
            counted = measuring
            if counted:
                counts["started"] += 1
                waits.append(max(0.0, loop.time() - due))
            writer.write(b"GET " + paths[index] + b" HTTP/1.1\r\nHost: blackbox\r\n"
                         b"X-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length)
            if counted:
                counts["answered"] += 1
                if not head.startswith(b"HTTP/1.1 200"):
                    counts["http_errors"] += 1
                elif b"\nprobe_success 1" in body:
                    counts["success"] += 1
                else:
                    counts["failure"] += 1

    async def dispatcher() -> None:
        start = loop.time()
        round_ = 0
        next_index = 0
        while True:
            now = loop.time()
            while next_index < count:
                due = start + round_ * interval + next_index * interval / count
                if due > now:
                    break
                queue.put_nowait((next_index, due))
                next_index += 1
            if next_index == count:
                next_index, round_ = 0, round_ + 1
            await asyncio.sleep(TICK_S)

    workers = [asyncio.ensure_future(worker()) for _ in range(int(config["connections"]))]
    feeding = asyncio.ensure_future(dispatcher())
    await asyncio.sleep(warmup)
    measuring = True
    began = loop.time()
    print("begin", flush=True)
    await asyncio.sleep(duration)
    measuring = False
    window = loop.time() - began
    print("end", flush=True)
    for task in (*workers, feeding):
        task.cancel()
    await asyncio.gather(*workers, feeding, return_exceptions=True)
    failed = [task.exception() for task in workers
              if not task.cancelled() and task.exception() is not None]
    waits.sort()

    def nearest(q: float) -> float | None:
        return waits[min(len(waits) - 1, max(0, int(q * len(waits) + 0.5) - 1))] if waits else None

    return {"targets": count, "window_s": window, **counts, "queued_at_end": queue.qsize(),
            "wait_s": {"p50": nearest(0.5), "p99": nearest(0.99),
                       "max": waits[-1] if waits else None},
            "worker_errors": [repr(error)[:200] for error in failed][:5]}


def main() -> int:
    config = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(scrape(config))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
