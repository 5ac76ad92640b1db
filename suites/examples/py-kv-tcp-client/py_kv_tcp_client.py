"""A client of ``ensemble-kv`` over TCP, in Python: the peer side of a restart.

The server is the plan's service ``kv`` (a native program on another
machine); this suite finds it with :func:`service` and talks to it with
Python's ``socket`` module (the entry needs ``net = ["service:kv"]``).

Params: ``keys`` (keys a test writes, default 20), ``service`` (default
``kv``).

==============================  =================================================
test                            what it does
==============================  =================================================
``reads_back_after_a_restart``  writes its keys, signals ``kv-written``, waits
                                for ``kv-restarted`` (another client restarts
                                the server), reads every key back
``kill_and_start``              writes, kills the server (``fault.kill``), starts
                                it again, reads back (needs ``faults = ["kv"]``)
==============================  =================================================
"""

from __future__ import annotations

import socket

from ensemble_suite import (
    Tests,
    fail,
    fault,
    instance_index,
    log,
    machine,
    param,
    role,
    run_id,
    service,
    sync,
    test,
)

__all__ = ["Tests"]

KEYS = param("keys", int, default=20, help="keys a test writes")
SERVICE = param("service", str, default="kv", help="the plan's service to reach")


class Conn:
    """A line out, a line back."""

    def __init__(self) -> None:
        at = service(SERVICE.get())
        # An address, not a name: socket.create_connection would look the
        # address up (and only granted names resolve).
        family = socket.AF_INET6 if ":" in at.host else socket.AF_INET
        try:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect((at.host, at.port))
        except OSError as e:
            fail(f"connecting to {SERVICE.get()} at {at.addr()}: {e}")
        self.buf = b""

    def call(self, request: str) -> str:
        self.sock.sendall(request.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().rstrip("\r")

    def close(self) -> None:
        self.sock.close()


def key(i: int) -> str:
    return f"{run_id()}:{role()}:{instance_index()}:{i}"


def write_keys(c: Conn) -> int:
    keys = KEYS.get()
    for i in range(keys):
        answer = c.call(f"SET {key(i)} python value {i} from {machine()}")
        assert answer == "OK", answer
    return keys


def read_keys(c: Conn, keys: int) -> None:
    for i in range(keys):
        answer = c.call(f"GET {key(i)}")
        assert answer == f"VALUE python value {i} from {machine()}", answer


@test
def reads_back_after_a_restart() -> None:
    c = Conn()
    keys = write_keys(c)
    c.close()
    sync.signal("kv-written")
    sync.barrier("kv-restarted", 1, 60_000)
    log.info(f"{SERVICE.get()} was restarted; reading {keys} keys back")
    read_keys(Conn(), keys)


@test
def kill_and_start() -> None:
    c = Conn()
    keys = write_keys(c)
    c.close()
    fault.kill(SERVICE.get(), "KILL")
    fault.start(SERVICE.get())
    read_keys(Conn(), keys)
