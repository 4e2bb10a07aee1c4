"""`python -m benchmarks._burst URL N`: N concurrent POSTs to URL, each starting a task.

Runs in its own process, so the caller's latency probe shares no event loop or GIL with it.
Exits non-zero unless every POST got a 2xx.
"""

import asyncio
import sys

import httpx


async def burst(url: str, count: int) -> int:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        responses = await asyncio.gather(*(client.post(url) for _ in range(count)))
    return sum(1 for r in responses if not r.is_success)


if __name__ == "__main__":
    failed = asyncio.run(burst(sys.argv[1], int(sys.argv[2])))
    sys.exit(1 if failed else 0)
