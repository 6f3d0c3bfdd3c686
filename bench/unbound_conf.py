"""The start of every unbound.conf we write ourselves: the bench's two Unbounds and
the real-server tests' (tests/realservers) all open their config with it.

Pure text, no imports beyond the standard library, so that tests can use it without
pulling in the bench's process helpers.
"""

from __future__ import annotations

from pathlib import Path


def server_clause(workdir: Path, host: str, port: int, *, verbosity: int = 1) -> str:
    """The start of the ``server:`` clause: in the foreground, one thread, IPv4 on
    ``host``, every file in ``workdir``, no validator; the caller adds the rest
    (further settings indented by four spaces, then its other clauses).

    No pid file: we stop Unbound by the PID of the process we started, and the
    bench's two Unbounds share one work directory (a shared pid file would be
    removed by whichever stops first). ``verbosity=0`` keeps the bench's logs to
    errors; the tests keep 1, whose start-up lines help read a failed launch.
    """
    return f"""server:
    interface: {host}@{port}
    port: {port}
    do-daemonize: no
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: {verbosity}
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
"""
