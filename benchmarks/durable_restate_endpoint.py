"""The Restate endpoint ``durable.py`` benchmarks: the workload behind ``LashRestateService``.

Started by ``durable.py`` as a child process; reads ``LASH_BENCH_HOME`` (the SQLite
store's parent directory) and ``LASH_BENCH_PORT``, and serves on loopback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import workload_core

from lash.hosts.restate import LashRestateService


async def main() -> None:
    home = Path(os.environ["LASH_BENCH_HOME"])
    store = f"sqlite:///{home / 'store'}"
    service = LashRestateService(lambda host: workload_core(store, effect_host=host))
    await service.core()
    config = Config()
    config.bind = [f"127.0.0.1:{os.environ['LASH_BENCH_PORT']}"]
    config.loglevel = "WARNING"
    try:
        await serve(service.app(), config)
    finally:
        await service.aclose()


if __name__ == "__main__":
    asyncio.run(main())
