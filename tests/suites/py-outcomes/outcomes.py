"""Every outcome the Python SDK reports; tests/tests/polyglot.rs checks
each test's outcome and message."""
import datetime

from ensemble_suite import Tests, attach, fail, log, param, skip, sync, test

__all__ = ["Tests"]

WORD = param("word", str, required=True, help="a word the plan sets")
NAP = param("nap", datetime.timedelta, default="1m 30s", help="a duration")
RATIO = param("ratio", float, default=0.5, help="a ratio")


def lookup(values):
    return values["missing"]


@test(tags=["fine"])
def passes():
    assert WORD.get() == "ensemble", WORD.get()
    assert NAP.get() == datetime.timedelta(seconds=90), NAP.get()
    assert RATIO.get() == 0.5


@test
def assert_with_message():
    x = 2
    assert x == 3, "x should be 3"


@test
def bare_assert():
    items = [1, 2, 3]
    assert len(items) == 4


@test
def raises():
    lookup({"present": 1})


@test
def fails():
    fail("failed on purpose")


@test
def skips():
    skip("skipped on purpose")


@test(ignore=True)
def ignored():
    fail("runs only when asked")


@test
def logs_and_attaches():
    log.info("an info line")
    assert attach("note.txt", "some text\n")
    assert not attach("note.txt", "again"), "a name attached twice is refused"


@test
def sync_times_out():
    sync.barrier("never", 2, 100)
