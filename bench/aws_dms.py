"""DescribeReplicationTasks calls per second from boto3 with CONC threads sharing one client
(argv: total calls, concurrency). The endpoint comes from AWS_ENDPOINT_URL. Prints JSON."""
import json, sys, threading, time
import boto3
from botocore.config import Config

total = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
conc = int(sys.argv[2]) if len(sys.argv) > 2 else 64
client = boto3.client("dms", config=Config(max_pool_connections=conc,
                                           retries={"mode": "standard"}))
client.describe_replication_tasks()
lock = threading.Lock()
left = [total]
seen = [0]


def worker():
    while True:
        with lock:
            if left[0] <= 0:
                return
            left[0] -= 1
        r = client.describe_replication_tasks(MaxRecords=100)
        with lock:
            seen[0] += len(r["ReplicationTasks"])


t0 = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts:
    t.start()
for t in ts:
    t.join()
dt = time.perf_counter() - t0
print(json.dumps({"calls": total, "seconds": dt, "per_second": total / dt, "tasks_seen": seen[0]}))
