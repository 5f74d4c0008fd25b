"""A small TAP producer for Python tests (process-level: signals, pty, servers)."""
import os
import sys
import traceback

ROOT = os.environ.get("FLOWRUN_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FLOWRUN = os.environ.get("FLOWRUN") or os.path.join(ROOT, "flowrun")

_n = 0
_failed = 0


def ok(cond, msg=""):
    global _n, _failed
    _n += 1
    if not cond:
        _failed += 1
    print(("ok " if cond else "not ok ") + str(_n) + (" - " + msg.replace("\n", " ") if msg else ""), flush=True)
    return cond


def eq(got, want, msg=""):
    good = got == want
    ok(good, msg)
    if not good:
        diag("     got: %r" % (got,))
        diag("expected: %r" % (want,))
    return good


def like(s, needle, msg=""):
    good = isinstance(s, str) and needle in s
    ok(good, msg)
    if not good:
        diag("     got: %r" % (s,))
        diag("expected to contain: %r" % (needle,))
    return good


def diag(msg):
    for l in str(msg).splitlines() or [""]:
        print("# " + l, flush=True)


def test(fn):
    """Decorator: runs the function now; an exception is one failed line."""
    print("# " + fn.__name__, flush=True)
    try:
        fn()
    except Exception:
        ok(False, fn.__name__ + " raised")
        diag(traceback.format_exc())
    return fn


def done():
    print("1..%d" % _n, flush=True)
    sys.exit(1 if _failed else 0)
