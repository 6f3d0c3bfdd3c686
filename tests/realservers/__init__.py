"""Real Debian DNS servers, started in the foreground on loopback for the test suite."""
