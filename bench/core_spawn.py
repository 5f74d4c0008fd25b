"""bench peer: spawn-and-complete of N trivial asyncio tasks (batches of 10,000 with gather)."""
import asyncio, json, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
B = 10000


async def trivial(i):
    return i


async def main():
    t0 = time.monotonic()
    for _ in range(N // B):
        await asyncio.gather(*[asyncio.create_task(trivial(i)) for i in range(B)])
    return time.monotonic() - t0


dt = asyncio.run(main())
print(json.dumps({"tasks": N, "seconds": round(dt, 3), "per_second": round(N / dt)}))
