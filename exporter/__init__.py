"""dnsgap: a Prometheus exporter for the DNS operations a server does not support."""

__version__ = "0.1.0"
