"""bench/server_sse.py URL RUN_PATH N SECONDS — N clients follow one run's SSE stream
(GET RUN_PATH, Server-Sent Events) and measure, for every event each client receives (`run`,
the whole run, or `delta`, what changed), the
delay from the state change it shows (the latest time in the run: a task started or finished)
to the arrival of the event's first byte. Prints JSON {clients, events, p50, p99, max} (ms).

The client is asyncio over raw sockets; each distinct event payload is parsed once (its change
time), the others are only matched by hash, so the client's own cost stays small beside the
server's (it still counts in the figures: they are an upper bound)."""
import asyncio
import json
import re
import sys
import time

url, path, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
TIMES = re.compile(rb'"(?:started|finished)":([0-9.]+)')
change_of = {}
delays = []
connected = 0
done = 0


def change_time(payload):
    h = hash(payload)
    t = change_of.get(h)
    if t is None:
        t = max(float(x) for x in TIMES.findall(payload))
        change_of[h] = t
    return t


class Client(asyncio.Protocol):
    def __init__(self, finished):
        self.buf = b""
        self.first = None
        self.head = True
        self.events = 0
        self.finished = finished

    def connection_made(self, tr):
        global connected
        connected += 1
        # HTTP/1.0: the stream comes unchunked, as it is written
        tr.write(("GET %s HTTP/1.0\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n\r\n" % (path, host, port)).encode())

    def data_received(self, data):
        now = time.time()
        if not self.buf:
            self.first = now  # the first byte of what follows
        self.buf += data
        if self.head:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            self.buf = self.buf[i + 4:]
            self.head = False
            self.first = now
        # complete blocks ("...\n\n"): an event, a comment, the retry line
        while True:
            j = self.buf.find(b"\n\n")
            if j < 0:
                break
            block = self.buf[:j]
            self.buf = self.buf[j + 2:]
            if block.startswith(b"event: run\ndata: ") or block.startswith(b"event: delta\ndata: "):
                self.events += 1
                if self.events > 1:  # the first is the state at connection time, not a change
                    delays.append(self.first - change_time(block[block.index(b"data: ") + 6:]))
            elif block.startswith(b"event: end") and not self.finished.done():
                self.finished.set_result(True)
            # what is left began in this read (or is nothing yet)
            self.first = now

    def connection_lost(self, exc):
        if not self.finished.done():
            self.finished.set_result(False)


async def main():
    loop = asyncio.get_running_loop()
    futs = []
    for _ in range(n):
        f = loop.create_future()
        futs.append(f)
        await loop.create_connection(lambda f=f: Client(f), host, int(port))
    print(json.dumps({"connected": connected}), flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*futs), timeout=seconds)
    except asyncio.TimeoutError:
        pass


asyncio.run(main())
d = sorted(x * 1000 for x in delays)
def pct(p):
    return d[min(len(d) - 1, int(len(d) * p))] if d else float("nan")
print(json.dumps({"clients": n, "events": len(delays), "p50": pct(0.5), "p99": pct(0.99), "max": d[-1] if d else None}))
