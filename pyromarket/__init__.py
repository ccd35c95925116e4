"""pyromarket: a replicated trading market built on Pyro5 remote objects.

Processes and the modules that run them:
    warehouse.py   the database server (store.py holds its SQLite state)
    peer.py        a buyer or seller; runs the election (election.py); the winners host
                   a trader (trader.py), the rest trade (client.py)
    start.py       the launcher; market.py starts and stops a whole market
Shared below them: rpc.py (the only Pyro5 boundary), config.py, orders.py,
batching.py, eventlog.py, process.py, runtime.py and errors.py.
"""

__version__ = "0.1.0"
