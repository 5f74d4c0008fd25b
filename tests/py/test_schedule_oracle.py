"""Cron fire times against an independent oracle: Debian's croniter 1.3.5 and Python's zoneinfo
(which read the same /usr/share/zoneinfo as flowrun). Generated (expression, zone, instant)
cases, most of them around every DST transition of zones with awkward rules over 17 years, are
written as JSON, evaluated by one flowrun process, and compared twice.

1. With the oracle: croniter on naive local wall-clock time, as Airflow calls it, with zoneinfo
   turning each local time croniter finds into instants by the documented DST policy
   (lua/flow/schedule/cron.lua): a local time that occurs once is that instant; one that
   occurs twice is its first occurrence, and also its second when the hour field is `*`; one
   that does not exist is read with the offset before the change (zoneinfo's fold=0). The
   oracle walks croniter's local times on both sides of the start, so it shares no code and no
   algorithm with flowrun's segment search. Every answer must agree, save where croniter's
   get_prev raises CroniterBadDateError (it never finds February 29) and flowrun's answer is
   an ordinary fire time.

2. With croniter given zone-aware datetimes (a fresh croniter per call), which is what croniter
   does with zoneinfo on its own. Its DST correction shifts answers by the DST difference
   whenever the start and the answer have different UTC offsets (`0 12 * * *` from the day
   before a spring-forward answers 11:00), so it is often wrong; a difference is accepted only
   when an independent check (croniter's own field expansion and zoneinfo, or croniter itself)
   shows croniter's answer wrong, or when it is the documented policy; each kind is counted:
   - found none: CroniterBadDateError while flowrun's answer is an ordinary fire time (a
     matching local time that occurs exactly once);
   - not after (before) the start: croniter's next is not after the start, or prev not before;
   - not a fire time: neither a matching local time nor the image of a matching local time
     skipped by a spring-forward;
   - skipped a fire time: flowrun's answer lies between the start and croniter's and is an
     ordinary fire time;
   - contradicts itself: croniter asked from a nearby start on the same side (a minute, an
     hour, two hours or a day before the start for next, after it for prev) answers flowrun's
     answer, which lies between the start and croniter's;
   - repeated hour (policy): flowrun's answer is the second occurrence of a repeated local time
     of an expression whose hour field is `*` (Airflow fires it; croniter does not);
   - second occurrence (policy): croniter's answer is the second occurrence of a repeated local
     time of an expression whose hour field is not `*` (fired at its first occurrence only).
   Any other difference fails the test.
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))

try:
    import croniter  # noqa: F401
except ImportError:
    # The python3 first on PATH may be another one; Debian's has python3-croniter.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

from datetime import datetime, timedelta, timezone  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from croniter import CroniterBadDateError, croniter as Croniter  # noqa: E402

import tap  # noqa: E402

UTC = timezone.utc
random.seed(20260329)

DRIVER = r"""
local json = require "json"
local cron = require "flow.schedule.cron"
local tz = require "flow.schedule.tz"
local f = assert(io.open(arg[1], "rb"))
local doc = json.decode(f:read("a"))
f:close()
local zones = {}
local function zone(name)
  local z = zones[name]
  if not z then z = assert(tz.load(name)); zones[name] = z end
  return z
end
local scheds, out = {}, { cron = {}, to_local = {}, from_local = {} }
for i, c in ipairs(doc.cron) do
  local s = scheds[c[1]]
  if not s then s = assert(cron.parse(c[1])); scheds[c[1]] = s end
  local z = zone(c[2])
  out.cron[i] = { s:next(c[3], z) or json.null, s:prev(c[3], z) or json.null }
end
for i, c in ipairs(doc.to_local) do
  local l = zone(c[1]):to_local(c[2])
  out.to_local[i] = { l.year, l.month, l.day, l.hour, l.min, l.sec, l.offset, l.abbr, l.wday,
    l.yday, l.isdst }
end
for i, c in ipairs(doc.from_local) do
  out.from_local[i] = json.array(zone(c[1]):from_local(table.unpack(c, 2)))
end
local o = assert(io.open(arg[2], "wb"))
o:write(json.encode(out))
o:close()
"""

DST_ZONES = ["Europe/Paris", "America/New_York", "America/Sao_Paulo", "Australia/Sydney",
             "Australia/Lord_Howe", "Asia/Tehran", "America/Santiago", "Pacific/Chatham",
             "America/St_Johns", "Europe/London", "Africa/Casablanca", "America/Havana",
             "Europe/Dublin", "Pacific/Auckland"]
OTHER_ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Tokyo", "Etc/GMT+5"]
YEARS = range(2014, 2031)

FIXED_EXPRS = [
    "0 2 * * *", "30 2 * * *", "0 1 * * *", "30 1 * * *", "0 0 * * *", "0 3 * * *",
    "15 2,3 * * *", "45 1,2 * * *", "*/15 * * * *", "*/30 * * * *", "0 * * * *", "30 * * * *",
    "0 */2 * * *", "0 1-3 * * *", "*/20 0-3 * * *", "0 0 29 2 *", "0 0 31 * *", "0 0 1 * *",
    "0 12 * * MON-FRI", "0 0 1,15 * MON", "0 0 * * SUN", "0 23 * * 6", "0 0 1 JAN *",
    "5 4 * * 7", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "0 0 13 * FRI",
    "*/7 */5 * * *", "10/20 2 * * *", "59 23 31 12 *", "0 0 30 * *", "30 0 * * *",
    "30 23 * * *", "0 22-23 * * *", "* * * * *", "0 9-17/2 * * mon-fri",
    "0 0 28-31 * *", "0 0 * FEB,MAR *", "0 2 * MAR,OCT SUN", "0 0 1-7 * 1",
]


def gen_field(lo, hi, names=None):
    r = random.random()
    def val():
        v = random.randint(lo, hi)
        if names and random.random() < 0.4 and v < len(names):
            return names[v]
        return str(v)
    if r < 0.35:
        return "*"
    if r < 0.55:
        return val()
    if r < 0.7:
        return ",".join(sorted({val() for _ in range(random.randint(2, 4))}, key=str))
    if r < 0.8:
        a = random.randint(lo, hi)
        b = random.randint(a, hi)
        return "%d-%d" % (a, b)
    if r < 0.9:
        return "*/%d" % random.randint(1, max(1, (hi - lo) // 2))
    a = random.randint(lo, hi)
    b = random.randint(a, hi)
    return "%d-%d/%d" % (a, b, random.randint(1, 5))


MONTHS = ["", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DOWS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def gen_expr():
    while True:
        e = " ".join([gen_field(0, 59), gen_field(0, 23), gen_field(1, 31),
                      gen_field(1, 12, MONTHS), gen_field(0, 6, DOWS)])
        try:
            c = Croniter(e, datetime(2020, 1, 1, tzinfo=UTC))
            c.get_next(float)
            c.get_prev(float)
            return e
        except Exception:
            continue


def transitions(zone, years):
    """Every offset change of the zone in the years, found by sampling zoneinfo and bisecting."""
    z = ZoneInfo(zone)
    start = int(datetime(years[0], 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(years[-1] + 1, 1, 1, tzinfo=UTC).timestamp())

    def off(t):
        return datetime.fromtimestamp(t, z).utcoffset()

    out = []
    step = 3 * 3600
    t, o = start, off(start)
    while t < end:
        n = t + step
        on = off(n)
        if on != o:
            lo, hi = t, n
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if off(mid) == o:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t, o = n, on
    return out


def build_cases():
    exprs = FIXED_EXPRS + [gen_expr() for _ in range(70)]
    cases = []
    trans_count = {}
    offsets = [0, 1, -1, 59, 60, 61, -59, -60, -61, 1799, 1800, 1801, -1800, 3599, 3600, 3601,
               -3600, -3601, 5400, -5400, 7200, -7200, 10800, -10800, 86400, -86400]
    for zone in DST_ZONES:
        ts = transitions(zone, YEARS)
        trans_count[zone] = len(ts)
        for tr in ts:
            for d in offsets:
                cases.append((random.choice(exprs), zone, tr + d))
            for _ in range(4):
                cases.append((random.choice(exprs), zone, tr + random.randint(-36 * 3600,
                                                                              36 * 3600)))
    lo = int(datetime(YEARS[0], 1, 1, tzinfo=UTC).timestamp())
    hi = int(datetime(YEARS[-1], 12, 31, tzinfo=UTC).timestamp())
    for zone in DST_ZONES + OTHER_ZONES:
        for _ in range(160):
            t = random.randint(lo, hi)
            if random.random() < 0.3:
                t -= t % 60  # exactly on a minute: often on a fire time
            cases.append((random.choice(exprs), zone, t))
    # every expression at least a few times in UTC and Paris
    for e in exprs:
        for zone in ("UTC", "Europe/Paris"):
            for _ in range(3):
                cases.append((e, zone, random.randint(lo, hi)))
    return cases, trans_count


class Judge:
    """Independent checks of a candidate fire time: croniter's own expansion of the fields and
    zoneinfo's view of the local time."""

    def __init__(self):
        self.exp = {}
        self.croniters = {}

    def sets(self, expr):
        if expr not in self.exp:
            e = Croniter(expr, datetime(2020, 1, 1, tzinfo=UTC)).expanded
            full = [x == ["*"] for x in e]
            ss = [set(range(60)) if full[0] else set(e[0]),
                  set(range(24)) if full[1] else set(e[1]),
                  set(range(1, 32)) if full[2] else set(e[2]),
                  set(range(1, 13)) if full[3] else set(e[3]),
                  set(range(7)) if full[4] else {v % 7 for v in e[4]}]
            self.exp[expr] = (ss, full)
        return self.exp[expr]

    def matches(self, expr, d):
        (mi, ho, dom, mon, dow), full = self.sets(expr)
        if d.minute not in mi or d.hour not in ho or d.month not in mon:
            return False
        wd = d.isoweekday() % 7
        if not full[2] and not full[4]:
            return d.day in dom or wd in dow
        return d.day in dom and wd in dow

    @staticmethod
    def local(t, zone):
        return datetime.fromtimestamp(t, ZoneInfo(zone))

    @staticmethod
    def occurrences(naive, zone):
        """Instants whose local time is `naive`: 0 (gap), 1, or 2 (overlap)."""
        z = ZoneInfo(zone)
        out = set()
        for fold in (0, 1):
            d = naive.replace(tzinfo=z, fold=fold)
            t = int(d.timestamp())
            back = datetime.fromtimestamp(t, z).replace(tzinfo=None)
            if back == naive:
                out.add(t)
        return sorted(out)

    def ordinary(self, expr, t, zone):
        """t is a matching local time that occurs exactly once."""
        d = self.local(t, zone)
        return (t % 60 == 0 and self.matches(expr, d)
                and len(self.occurrences(d.replace(tzinfo=None), zone)) == 1)

    def first_occurrence(self, expr, t, zone):
        """t is a matching local time at its first (or only) occurrence."""
        d = self.local(t, zone)
        return (t % 60 == 0 and self.matches(expr, d)
                and self.occurrences(d.replace(tzinfo=None), zone)[:1] == [t])

    def second_occurrence(self, t, zone):
        d = self.local(t, zone)
        occ = self.occurrences(d.replace(tzinfo=None), zone)
        return len(occ) == 2 and t == occ[1]

    def legit(self, expr, t, zone):
        """A matching local time, or the shifted image (offset before the change) of a matching
        local time that a spring-forward skipped."""
        if t % 60:
            return False
        d = self.local(t, zone)
        if self.matches(expr, d):
            return True
        z = ZoneInfo(zone)
        before = datetime.fromtimestamp(t - 86400, z).utcoffset()
        for back in range(0, 6 * 3600 + 1, 60):  # the offset before a change near t
            o = datetime.fromtimestamp(t - back - 1, z).utcoffset()
            if o != d.utcoffset():
                before = o
                break
        naive = (datetime.fromtimestamp(t, UTC) + before).replace(tzinfo=None)
        return self.matches(expr, naive) and not self.occurrences(naive, zone)

    def hour_full(self, expr):
        return self.sets(expr)[1][1]

    # --- oracle 1: croniter on naive local time, zoneinfo and the DST policy ---

    @staticmethod
    def margin(zone, t):
        """How far DST changes near t can reorder local times and instants (0 when none)."""
        z = ZoneInfo(zone)
        a = datetime.fromtimestamp(t - 129600, z).utcoffset()
        b = datetime.fromtimestamp(t + 129600, z).utcoffset()
        return timedelta(seconds=abs((a - b).total_seconds()))

    def oracle(self, expr, zone, t, forward):
        """The fire time after (before) t by the policy, or None when croniter finds none."""
        z = ZoneInfo(zone)
        hf = self.hour_full(expr)
        loc = datetime.fromtimestamp(t, z).replace(tzinfo=None)
        m = self.margin(zone, t)
        cur = loc - m if forward else loc + m
        best = None
        c = self.croniters.get(expr)
        if c is None:
            c = self.croniters[expr] = Croniter(expr, cur)
        c.set_current(cur, force=True)
        step = timedelta(minutes=1 if forward else -1)
        while True:
            # Dense expressions: the next few minutes by croniter's own field sets; otherwise
            # croniter's walk (naive datetimes: no zone, so none of its DST corrections).
            nxt = cur.replace(second=0) + (step if forward or cur.second == 0 else 0 * step)
            for _ in range(3):
                if self.matches(expr, nxt):
                    cur = nxt
                    break
                nxt += step
            else:
                try:
                    c.set_current(cur, force=True)
                    cur = c.get_next(datetime) if forward else c.get_prev(datetime)
                except CroniterBadDateError:
                    return best
            if best is not None:
                bl = datetime.fromtimestamp(best, z).replace(tzinfo=None)
                bm = self.margin(zone, best)
                if (forward and cur > bl + bm) or (not forward and cur < bl - bm):
                    return best
            occ = self.occurrences(cur, zone)
            if len(occ) == 2 and not hf:
                occ = occ[:1]
            elif not occ:
                occ = [int(cur.replace(tzinfo=z, fold=0).timestamp())]
            for i in occ:
                if forward and i > t and (best is None or i < best):
                    best = i
                if not forward and i < t and (best is None or i > best):
                    best = i


def run_flowrun(doc):
    tmp = tempfile.mkdtemp(prefix="flowrun-oracle-")
    drv = os.path.join(tmp, "driver.lua")
    inp = os.path.join(tmp, "cases.json")
    outp = os.path.join(tmp, "out.json")
    with open(drv, "w") as f:
        f.write(DRIVER)
    with open(inp, "w") as f:
        json.dump(doc, f)
    t0 = time.time()
    p = subprocess.run([tap.FLOWRUN, drv, inp, outp], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    el = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError("flowrun failed: " + p.stderr)
    with open(outp) as f:
        out = json.load(f)
    for n in (drv, inp, outp):
        os.unlink(n)
    os.rmdir(tmp)
    return out, el


def croniter_answers(cases):
    return [(croniter_at(e, t, z, True), croniter_at(e, t, z, False)) for e, z, t in cases]


def croniter_at(expr, t, zone, forward):
    c = Croniter(expr, datetime.fromtimestamp(t, ZoneInfo(zone)))
    try:
        return int(c.get_next(float) if forward else c.get_prev(float))
    except CroniterBadDateError:
        return None


def classify(judge, expr, zone, t, ours, theirs, forward):
    """Why a difference with zone-aware croniter is not flowrun's fault, or None."""
    if theirs is None:
        return "found none" if judge.ordinary(expr, ours, zone) else None
    if (forward and theirs <= t) or (not forward and theirs >= t):
        return "not after the start" if forward else "not before the start"
    if not judge.legit(expr, theirs, zone):
        return "not a fire time"
    between = (t < ours < theirs) if forward else (theirs < ours < t)
    if between and judge.first_occurrence(expr, ours, zone):
        return "skipped a fire time"
    if between:
        sign = -1 if forward else 1
        for s in [t + sign * d for d in (60, 3600, 7200, 86400)] + \
                 [ours + sign * d for d in (60, 3600, 7200)]:
            if croniter_at(expr, s, zone, forward) == ours:
                return "contradicts itself"
    if between and judge.hour_full(expr) and judge.second_occurrence(ours, zone) \
            and judge.matches(expr, judge.local(ours, zone)):
        return "repeated hour (policy)"
    if between and judge.legit(expr, ours, zone) and \
            not judge.matches(expr, judge.local(ours, zone)):
        return "skipped a shifted time (policy)"
    if not judge.hour_full(expr) and judge.second_occurrence(theirs, zone):
        return "second occurrence (policy)"
    return None


def fmt(t, zone):
    return "%d (%s)" % (t, datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat())


@tap.test
def oracle():
    cases, trans = build_cases()
    tap.diag("transitions per zone in %d-%d: %s" % (YEARS[0], YEARS[-1], ", ".join(
        "%s %d" % kv for kv in sorted(trans.items()))))
    tap.ok(all(trans[z] > 0 for z in DST_ZONES), "every DST zone has transitions in the years")
    ours, tf = run_flowrun({"cron": [list(c) for c in cases], "to_local": [], "from_local": []})
    ours = ours["cron"]
    judge = Judge()

    # 1. croniter on local time + zoneinfo + the policy
    t0 = time.time()
    compared, failures, excluded = 0, [], {}
    for (expr, zone, t), (onx, opv) in zip(cases, ours):
        good = True
        for forward, o in ((True, onx), (False, opv)):
            want = judge.oracle(expr, zone, t, forward)
            if want == o:
                continue
            if o is not None and judge.ordinary(expr, o, zone) and (
                    want is None or (t < o < want if forward else want < o < t)):
                # croniter raised CroniterBadDateError, or walked past an ordinary fire time
                why = "found none" if want is None else "skipped an ordinary fire time"
                excluded[why] = excluded.get(why, 0) + 1
                good = None if good else good
                continue
            good = False
            failures.append("%s %r in %s from %s: flowrun %s, oracle %s" % (
                "next" if forward else "prev", expr, zone, fmt(t, zone),
                "nil" if o is None else fmt(o, zone), "none" if want is None else fmt(want, zone)))
        if good:
            compared += 1
    tap.diag("%d cases: flowrun %.2fs (one process), oracle %.1fs" % (
        len(cases), tf, time.time() - t0))
    for why, n in sorted(excluded.items()):
        tap.diag("  answers excluded where croniter %s: %d" % (why, n))
    for f in failures[:30]:
        tap.diag(f)
    tap.ok(not failures, "every next and prev agrees with the oracle (%d differ)" % len(failures))
    tap.ok(compared >= 10000, "at least 10,000 cases compared (%d)" % compared)
    print("# compared %d cases (%d generated, next and prev each) with croniter + zoneinfo"
          % (compared, len(cases)))

    # 2. croniter with zone-aware datetimes
    t0 = time.time()
    theirs = croniter_answers(cases)
    same, kinds, failures = 0, {}, []
    for (expr, zone, t), (onx, opv), (cnx, cpv) in zip(cases, ours, theirs):
        case_same = True
        for forward, o, c in ((True, onx, cnx), (False, opv, cpv)):
            if o == c:
                continue
            case_same = False
            why = None if o is None else classify(judge, expr, zone, t, o, c, forward)
            if why:
                kinds[why] = kinds.get(why, 0) + 1
            else:
                failures.append("%s %r in %s from %s: flowrun %s, croniter %s" % (
                    "next" if forward else "prev", expr, zone, fmt(t, zone),
                    "nil" if o is None else fmt(o, zone),
                    "none" if c is None else fmt(c, zone)))
        same += case_same
    tap.diag("croniter with zone-aware datetimes (%.1fs): %d cases agree on next and prev"
             % (time.time() - t0, same))
    for why, n in sorted(kinds.items()):
        tap.diag("  differences where croniter %s: %d" % (why, n))
    for f in failures[:30]:
        tap.diag(f)
    tap.ok(not failures, "every difference with zone-aware croniter is explained (%d are not)"
           % len(failures))


@tap.test
def zones():
    """tz.lua's view of every zone Python's zoneinfo knows, at random instants from 1901 to 2150
    (past the tables' end in 2037, where the POSIX rule of each file's footer takes over) and
    around transitions; and from_local's instants against zoneinfo's folds."""
    import zoneinfo
    names = sorted(n for n in zoneinfo.available_timezones()
                   if not n.startswith(("right/", "posix/")) and n not in ("localtime", "Factory"))
    rng = random.Random(8536)
    to_local = []
    for n in names:
        for _ in range(24):
            to_local.append([n, rng.randint(-2 ** 31, 5680281600)])
    from_local = []
    for zone in DST_ZONES + ["America/Godthab", "Asia/Gaza", "America/Caracas"]:
        z = ZoneInfo(zone)
        for tr in transitions(zone, range(2010, 2045)):
            for d in (-7200, -3600, -1801, -1800, -1, 0, 1, 59, 1799, 1800, 3599, 3600, 3601, 7200):
                to_local.append([zone, tr + d])
                naive = (datetime.fromtimestamp(tr, UTC) + datetime.fromtimestamp(tr - 1, z)
                         .utcoffset() + timedelta(seconds=d)).replace(tzinfo=None)
                from_local.append([zone, naive.year, naive.month, naive.day, naive.hour,
                                   naive.minute, naive.second])
    out, _ = run_flowrun({"cron": [], "to_local": to_local, "from_local": from_local})
    bad = []
    for (n, t), got in zip(to_local, out["to_local"]):
        d = datetime.fromtimestamp(t, ZoneInfo(n))
        want = [d.year, d.month, d.day, d.hour, d.minute, d.second,
                int(d.utcoffset().total_seconds()), d.tzname(), d.isoweekday() % 7 + 1,
                d.timetuple().tm_yday, bool(d.dst())]
        if got != want:
            bad.append("to_local(%s, %d): %r, zoneinfo %r" % (n, t, got, want))
    tap.diag("%d zones, %d instants" % (len(names), len(to_local)))
    for b in bad[:20]:
        tap.diag(b)
    tap.ok(not bad, "to_local agrees with zoneinfo on every instant (%d differ)" % len(bad))
    bad = []
    kinds = {0: 0, 1: 0, 2: 0}
    for c, got in zip(from_local, out["from_local"]):
        want = Judge.occurrences(datetime(*c[1:]), c[0])
        kinds[len(want)] = kinds.get(len(want), 0) + 1
        if got != want:
            bad.append("from_local%r: %r, zoneinfo %r" % (tuple(c), got, want))
    tap.diag("from_local: %d local times, %d in gaps, %d in overlaps" % (
        len(from_local), kinds[0], kinds[2]))
    for b in bad[:20]:
        tap.diag(b)
    tap.ok(not bad, "from_local lists the instants zoneinfo's folds give (%d differ)" % len(bad))
    tap.ok(kinds[0] > 100 and kinds[2] > 100, "gaps and overlaps both tested")


tap.done()
