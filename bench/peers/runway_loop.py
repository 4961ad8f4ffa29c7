"""The runwayml SDK loop as its README shows it: AsyncRunwayML, a semaphore of C, and for each job
`await client.<endpoint>.create(...)` then `await task.wait_for_task_output()`; each output is then
downloaded. The SDK's poll sleep (6 +/- 1.5 s, module constants) is scaled like every other clock.

    python runway_loop.py JOBS.json CONCURRENCY OUT_DIR POLL_TIME POLL_JITTER   (base URL and key from the environment)
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import runwayml.lib.polling as polling
from runwayml import AsyncRunwayML


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def main(jobs: list[dict], concurrency: int, out: Path) -> None:
    client = AsyncRunwayML()  # RUNWAYML_BASE_URL and RUNWAYML_API_SECRET
    downloads = httpx.AsyncClient(timeout=120)
    semaphore = asyncio.Semaphore(concurrency)

    async def generate(job: dict) -> None:
        async with semaphore:
            endpoint = getattr(client, job["endpoint"])
            task = await endpoint.create(model=job["model"], **{snake(k): v for k, v in job["body"].items()})
            done = await task.wait_for_task_output()
        response = await downloads.get(done.output[0])
        response.raise_for_status()
        (out / f"{job['id']}.mp4").write_bytes(response.content)

    await asyncio.gather(*(generate(job) for job in jobs))
    await downloads.aclose()
    await client.close()


if __name__ == "__main__":
    jobs_file, concurrency, out_dir, poll_time, poll_jitter = sys.argv[1:6]
    polling.POLL_TIME, polling.POLL_JITTER = float(poll_time), float(poll_jitter)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(json.loads(Path(jobs_file).read_text()), int(concurrency), Path(out_dir)))
