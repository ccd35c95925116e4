"""Starts Pyro5's own name server on the host and port a market config names."""
