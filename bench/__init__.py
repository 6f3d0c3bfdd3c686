"""dnsgap's benchmark suite: ``python -m bench [quick|full]`` (see bench/README.md)."""
