"""The physical ceiling: bare Pyro5 objects that do nothing, in one or two hops.

    python -m bench.chain backend --port P
    python -m bench.chain middle  --port P --backend PYRO:bench.backend@127.0.0.1:Q

A backend's `call(product, qty, request_id)` returns None; a middle forwards the same
call to a backend through one proxy per worker thread (Pyro5's ownership rule), which
is the shape of buyer -> trader -> warehouse without any business logic or storage.
"""

from __future__ import annotations

import argparse
import signal
import threading

from pyromarket import rpc


@rpc.expose
class Backend:
    def call(self, product, qty, request_id):
        return None

    def ping(self):
        return True


@rpc.expose
class Middle:
    def __init__(self, backend_uri: str):
        self._backend = rpc.ThreadLocalProxy(backend_uri, 10.0)

    def call(self, product, qty, request_id):
        return self._backend.get().call(product, qty, request_id)

    def ping(self):
        return True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chain")
    parser.add_argument("role", choices=["backend", "middle"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", help="the backend's URI (middle only)")
    args = parser.parse_args()
    rpc.configure(threadpool_size=128)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    obj = Backend() if args.role == "backend" else Middle(args.backend)
    server = rpc.Server("127.0.0.1", args.port)
    server.register(obj, f"bench.{args.role}")
    server.start()
    stop.wait()
    server.close()


if __name__ == "__main__":
    main()
