"""SigV4 signatures per second with botocore's SigV4Auth: the same request as aws_sign.lua;
the headers botocore adds are dropped before each signing (the request object is reused, so only
signing is timed, not request construction). Prints JSON."""
import json, sys, time
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
auth = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "dms", "us-east-1")
body = b'{"Filters":[{"Name":"replication-task-arn","Values":["arn:aws:dms:us-east-1:123456789012:task:ABC"]}]}'
req = AWSRequest(method="POST", url="https://dms.us-east-1.amazonaws.com/", data=body, headers={
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AmazonDMSv20160101.DescribeReplicationTasks"})
for _ in range(200):
    auth.add_auth(req)
t0 = time.perf_counter()
for _ in range(n):
    for h in ("Authorization", "X-Amz-Date"):
        if h in req.headers:
            del req.headers[h]
    auth.add_auth(req)
dt = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": dt, "per_second": n / dt}))
