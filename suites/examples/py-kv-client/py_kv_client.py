"""The client role of the kv demo, in Python: the counterpart of the Rust
``kv-client`` suite, run against the Rust ``kv-server`` suite.

It waits for the server, verifies the snapshot the server published against
its own copy of the generator (a port of ``kv-model``), and reports a verdict
back. Every test runs in a fresh instance, so each one reads what it needs
from the sync topics again (subscriptions replay a topic from its first
message).

Params: ``keys`` (entries the client expects, default 100; must match the
server's), ``timeout_ms`` (for every wait, default 30000).

=============================  ==================================================
test                           expected
=============================  ==================================================
``client::waits_for_server``   passes once the server signalled ``server-ready``
``client::verifies_snapshot``  passes when the snapshot on ``kv/state`` matches
                               ``keys`` entries
``client::reports_verdict``    publishes its verdict to ``kv/verdict``, signals
                               ``client-done``; passes when the verdict is ok
=============================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from ensemble_suite import Failed, Tests, fail, instance_index, log, machine, param, sync, test

__all__ = ["Tests"]  # the export componentize-py looks for

KEYS = param("keys", int, default=100, help="entries the client expects (must match the server's)")
TIMEOUT_MS = param("timeout_ms", int, default=30_000, help="milliseconds every wait may take")

# The protocol of the kv demo (kv-model).
STATE_TOPIC = "kv/state"
VERDICT_TOPIC = "kv/verdict"
SERVER_READY = "server-ready"
CLIENT_DONE = "client-done"
VERDICT_OK = "ok"

U64 = 0xFFFF_FFFF_FFFF_FFFF


def key(i: int) -> str:
    """The key of entry ``i``."""
    return f"key-{i:05}"


def value(i: int) -> str:
    """The value of entry ``i``: a hex hash of ``i`` (splitmix64, u64 arithmetic)."""
    z = (i + 0x9E37_79B9_7F4A_7C15) & U64
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & U64
    return f"{z ^ (z >> 31):016x}"


def checksum(n: int) -> int:
    """FNV-1a (64 bit) over ``key=value\\n`` of entries ``0..n``, in key order."""
    h = 0xCBF2_9CE4_8422_2325
    for k in sorted(key(i) for i in range(n)):
        index = int(k[4:])
        for byte in f"{k}={value(index)}\n".encode():
            h = ((h ^ byte) * 0x0100_0000_01B3) & U64
    return h


@dataclass
class Snapshot:
    """What the server publishes about its store."""

    count: int
    checksum: int
    samples: List[Tuple[str, str]]

    @classmethod
    def decode(cls, text: str) -> "Snapshot":
        """Parses the line format; the error says which line is wrong."""
        count = digest = None
        samples = []
        for line in text.splitlines():
            words = line.split()
            if not words:
                continue
            if len(words) == 2 and words[0] == "count":
                try:
                    count = int(words[1])
                except ValueError:
                    raise ValueError(f'bad count "{words[1]}"') from None
            elif len(words) == 2 and words[0] == "checksum":
                try:
                    digest = int(words[1], 16)
                except ValueError:
                    raise ValueError(f'bad checksum "{words[1]}"') from None
            elif len(words) == 3 and words[0] == "sample":
                samples.append((words[1], words[2]))
            else:
                raise ValueError(f'unexpected line "{line}"')
        if count is None:
            raise ValueError("no count line")
        if digest is None:
            raise ValueError("no checksum line")
        return cls(count, digest, samples)

    def problems(self, expected_count: int) -> List[str]:
        """Every way this snapshot differs from the generator's ``expected_count`` entries."""
        problems = []
        if self.count != expected_count:
            problems.append(f"count is {self.count} but {expected_count} was expected")
        expected_checksum = checksum(expected_count)
        if self.checksum != expected_checksum:
            problems.append(
                f"checksum is {self.checksum:016x} but {expected_checksum:016x} was expected"
            )
        for sample_key, actual in self.samples:
            index = sample_key[4:] if sample_key.startswith("key-") else ""
            i = int(index) if index.isdigit() else None
            if i is not None and i < expected_count:
                if actual != value(i):
                    problems.append(f"sample {sample_key} is {actual} but {value(i)} was expected")
            else:
                problems.append(f'sample key "{sample_key}" is not generated')
        return problems


def check_snapshot() -> Snapshot:
    """Reads the server's snapshot from ``kv/state`` and checks it."""
    with sync.subscribe(STATE_TOPIC) as state:
        text = state.next(TIMEOUT_MS.get())
    try:
        snapshot = Snapshot.decode(text)
    except ValueError as error:
        fail(f"unreadable snapshot: {error}")
    problems = snapshot.problems(KEYS.get())
    if problems:
        fail("wrong snapshot: " + "; ".join(problems))
    return snapshot


@test(name="client::waits_for_server", tags=["sync"])
def waits_for_server() -> None:
    """Waits until the server signalled ``server-ready``."""
    sync.barrier(SERVER_READY, 1, TIMEOUT_MS.get())


@test(name="client::verifies_snapshot", tags=["sync"])
def verifies_snapshot() -> None:
    """The snapshot on ``kv/state`` matches this client's generator."""
    snapshot = check_snapshot()
    log.info(f"snapshot ok: {snapshot.count} entries, checksum {snapshot.checksum:016x}")


@test(name="client::reports_verdict", tags=["sync"])
def reports_verdict() -> None:
    """Publishes this client's verdict and signals ``client-done``, whatever the
    verdict, so that the server never waits for a client that gave up."""
    who = f"instance {instance_index()} on {machine()} (python)"
    try:
        snapshot = check_snapshot()
    except Failed as failure:
        verdict, problem = f"rejected by {who}: {failure}", failure
    else:
        verdict, problem = (
            f"{VERDICT_OK} {who}: {snapshot.count} entries, checksum {snapshot.checksum:016x}",
            None,
        )
    sync.publish(VERDICT_TOPIC, verdict)
    sync.signal(CLIENT_DONE)
    log.info(f"reported: {verdict}")
    if problem is not None:
        raise problem
