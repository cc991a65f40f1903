"""The ``lash`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lash`` command line."""
    parser = argparse.ArgumentParser(prog="lash", description="lash: durable LLM agent runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a scripted agent end to end (no network)")
    parser.parse_args(argv)  # argparse exits with a usage error for any other command
    from .demo import main as demo

    return demo(sys.stdout)
