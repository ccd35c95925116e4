"""A separate client process for concurrency tests: buys 1 unit at a time, through a
random trader each time, until the warehouse reports none available. Prints JSON."""

import argparse
import json
import random

from pyromarket import rpc
from pyromarket.orders import new_request_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ns-port", type=int, required=True)
    parser.add_argument("--product", required=True)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args()
    rpc.configure()
    with rpc.nameserver("127.0.0.1", args.ns_port) as ns:
        uris = rpc.list_traders(ns)
    traders = {n: rpc.proxy(uri, 10.0) for n, uri in uris.items()}
    shipped, via = [], {n: 0 for n in traders}
    while True:
        n = random.choice(sorted(traders))
        reply = traders[n].buy(args.product, 1, new_request_id(args.tag), f"client {args.tag}")
        if reply["outcome"] != "shipped":
            break
        shipped.append(reply["request_id"])
        via[n] += 1
    print(json.dumps({"shipped": shipped, "via": via}))


if __name__ == "__main__":
    main()
