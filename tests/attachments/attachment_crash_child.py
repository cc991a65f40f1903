"""Child process of the crash test: dies (SIGKILL) while writing an attachment's temp file.

Run as ``python attachment_crash_child.py <root>``. It puts ``payload()`` into a
``FileAttachmentStore`` and, once half of the bytes are in the temporary file,
prints ``writing`` and waits to be killed. The pause comes from wrapping the
store module's chunked writer (a white-box seam; the store has no test hook).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

SIZE = 8 * 1024 * 1024


def payload() -> bytes:
    """The attachment, identical in parent and child."""
    return random.Random(7).randbytes(SIZE)


def main(root: str) -> None:
    import lash.attachments.file as file_module
    from lash.attachments import FileAttachmentStore

    real = file_module._write_all

    def pause_midway(fd: int, data: bytes) -> None:
        if len(data) < SIZE:  # the metadata sidecar
            real(fd, data)
            return
        real(fd, data[: SIZE // 2])
        print("writing", flush=True)
        time.sleep(60)

    file_module._write_all = pause_midway

    async def run() -> None:
        await FileAttachmentStore(root).put(payload(), mime="application/octet-stream")
        print("stored", flush=True)  # never reached when the test kills us

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1])
