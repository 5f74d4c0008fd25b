"""bench/pg.py — the peer figure for bench/pg.sh: psycopg2 (Debian's python3-psycopg2), N
single-row SELECTs by primary key spread over T threads, one connection each. Prints queries/s.
    /usr/bin/python3 bench/pg.py CONNINFO [N] [THREADS]"""
import sys
import threading
import time

import psycopg2

conninfo = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 16
naccounts = 100000
per = n // threads
conns = [psycopg2.connect(conninfo) for _ in range(threads)]
for c in conns:
    c.autocommit = True
sql = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"


def work(i):
    cur = conns[i].cursor()
    rnd = 12345 + i + 1
    total = 0
    for _ in range(per):
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        cur.execute(sql, (rnd % naccounts + 1,))
        total += cur.fetchone()[0]


ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
t0 = time.perf_counter()
for t in ts:
    t.start()
for t in ts:
    t.join()
dt = time.perf_counter() - t0
print("%.0f" % (per * threads / dt))
