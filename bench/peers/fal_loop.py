"""fal-client as its README shows it: `AsyncClient.subscribe(application, arguments=...)` under a
semaphore of C (which polls the status URL every 0.1 s, its default, until COMPLETED, then fetches
the result); each output is then downloaded. fal-client takes no base URL, so the queue URL is set
on the module, as fal's own tests do.

    python fal_loop.py JOBS.json CONCURRENCY OUT_DIR FAL_QUEUE_URL   (key from FAL_KEY)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import httpx


async def main(jobs: list[dict], concurrency: int, out: Path) -> None:
    client = fal_client.AsyncClient()
    downloads = httpx.AsyncClient(timeout=120)
    semaphore = asyncio.Semaphore(concurrency)

    async def generate(job: dict) -> None:
        async with semaphore:
            result = await client.subscribe(job["endpoint"], arguments=job["body"])
        response = await downloads.get(result["video"]["url"])
        response.raise_for_status()
        (out / f"{job['id']}.mp4").write_bytes(response.content)

    await asyncio.gather(*(generate(job) for job in jobs))
    await downloads.aclose()


if __name__ == "__main__":
    jobs_file, concurrency, out_dir, queue_url = sys.argv[1:5]
    fal_module.QUEUE_URL_FORMAT = queue_url.rstrip("/") + "/"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(json.loads(Path(jobs_file).read_text()), int(concurrency), Path(out_dir)))
