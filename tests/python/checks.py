"""Per-check reporting shared by the client check scripts (run under any
Python 3: the system one with Debian's kafka-python 2.0.2 and pip's with
kafka-python 3): each check prints `PASS name` or `FAIL name: reason`, and
FAILURES lists the failed ones for the exit status."""

import sys
import traceback

FAILURES = []


def passed(name):
    print("PASS %s" % name, flush=True)


def failed(name, msg):
    print("FAIL %s: %s" % (name, msg), flush=True)
    FAILURES.append(name)


def note(msg):
    print("NOTE %s" % msg, flush=True)


def check(name, fn):
    """Runs one check; an exception is its failure. Returns fn's value (True if None) or None."""
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - every error is a failed check
        failed(name, "%s: %s" % (type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        return None
    passed(name)
    return value if value is not None else True


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)
