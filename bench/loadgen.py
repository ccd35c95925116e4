"""A closed-loop load generator process: one client calling as fast as replies come.

    python -m bench.loadgen --uri URI --method buy --start-at T --warmup-s W --duration-s D
    python -m bench.loadgen --names 127.0.0.1:9090 ...   # a random live trader per call

All clients of a measurement start at the same wall-clock instant (`--start-at`), call
for warmup + duration seconds, and count only calls that complete inside the steady
window [start + warmup, start + warmup + duration]. Prints one JSON line: calls in the
window, outcomes, and latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from collections import Counter

from pyromarket import rpc


class Names:
    """Like a peer: every call goes to a random trader among those registered, and the
    names are re-read every half second (so a trader launched meanwhile is used)."""

    def __init__(self, address: str, method: str):
        host, port = address.rsplit(":", 1)
        self.ns, self.method = rpc.nameserver(host, int(port)), method
        self.proxies: dict[int, object] = {}
        self.read_at = 0.0

    def __call__(self, *args):
        if time.monotonic() - self.read_at > 0.5:
            self.read_at = time.monotonic()
            for n, uri in rpc.list_traders(self.ns).items():
                if n not in self.proxies:
                    self.proxies[n] = rpc.proxy(uri, 10.0)
        return getattr(random.choice(list(self.proxies.values())), self.method)(*args)


def run(uri: str, method: str, products: list[str], start_at: float, warmup_s: float,
        duration_s: float, names: str | None = None) -> dict:
    if names:
        fn = Names(names, method)
    else:
        proxy = rpc.proxy(uri, 10.0)
        proxy._pyroBind()
        fn = getattr(proxy, method)
    prefix = uuid.uuid4().hex[:8]
    rng = random.Random(prefix)
    time.sleep(max(0.0, start_at - time.time()))
    window_start, window_end = start_at + warmup_s, start_at + warmup_s + duration_s
    latencies, outcomes, seq = [], Counter(), 0
    while True:
        seq += 1
        t0 = time.time()
        product = products[0] if len(products) == 1 else rng.choice(products)
        reply = fn(product, 1, f"{prefix}-{seq}")
        t1 = time.time()
        if t1 >= window_end:
            break
        if t0 >= window_start:
            latencies.append(t1 - t0)
            outcomes[reply["outcome"] if isinstance(reply, dict) else "none"] += 1
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 3) \
            if latencies else 0.0
    return {"calls": len(latencies), "outcomes": dict(outcomes), "p50_ms": pct(0.50),
            "p90_ms": pct(0.90), "p99_ms": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--uri", help="one object to call")
    target.add_argument("--names", metavar="HOST:PORT",
                        help="a name server: call a random registered trader each time")
    parser.add_argument("--method", default="buy")
    parser.add_argument("--products", default="salt", help="comma-separated; one at random per call")
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args()
    rpc.configure()
    print(json.dumps(run(args.uri, args.method, args.products.split(","), args.start_at,
                         args.warmup_s, args.duration_s, args.names)))


if __name__ == "__main__":
    main()
