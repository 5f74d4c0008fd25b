"""bench peer: N concurrent asyncio tasks each sleeping a random 0-1 s (same shape as core_sleep.lua)."""
import asyncio, json, random, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
late = [0.0] * N


def peak_kb():
    with open("/proc/self/status") as f:
        for l in f:
            if l.startswith("VmHWM:"):
                return int(l.split()[1])


async def sleeper(i, d):
    t0 = time.monotonic()
    await asyncio.sleep(d)
    late[i] = time.monotonic() - t0 - d


async def main():
    random.seed(42)
    await asyncio.gather(*[asyncio.create_task(sleeper(i, random.random())) for i in range(N)])


if len(sys.argv) > 2 and sys.argv[2] == "baseline":
    print(json.dumps({"peak_kb": peak_kb()}))
    sys.exit(0)
asyncio.run(main())
late.sort()
print(json.dumps({"peak_kb": peak_kb(), "p50_ms": late[N // 2] * 1000,
                  "p99_ms": late[int(N * 0.99) - 1] * 1000, "max_ms": late[-1] * 1000}))
