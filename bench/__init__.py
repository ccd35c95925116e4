"""pyromarket's benchmarks. Run `python -m bench --help` for the experiments."""
