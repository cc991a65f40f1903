"""Runtime tests: the asyncio shell around the kernel, driven through real interfaces.

pytest-asyncio is not a dependency: tests are plain functions that call
``runtime_support.run(...)``, which also bounds every test with a timeout so a
deadlock fails with a clear error instead of hanging the suite.
"""

import sys
from pathlib import Path

# ``postgres_support`` (the PostgreSQL test helpers) lives with the store tests.
sys.path.append(str(Path(__file__).parent.parent / "store"))
