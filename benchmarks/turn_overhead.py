"""Turn-overhead benchmark: lash against peer agent frameworks, one growing session each.

Workload (ARCHITECTURE.md, "Performance budgets"): in ONE session, N turns
(default 200); in each turn a fake model asks for two tool calls, ``add(1, 2)``
and ``add(3, 4)``, the tools run, and the model answers with text built from
the tool results. Every turn is checked for both tool executions and the answer.

Per framework it prints the median per-turn time over all N turns, the growth
(median of turns 180-200 over median of turns 20-40, the slices ``[180:200]``
and ``[20:40]``; scaled to N otherwise) and lash's ratio to it. Before the
measured runs, every framework does a separate 5-turn warm-up session, so all
of them are imported and warm before any of them is timed.

Peers (PydanticAI, OpenAI Agents SDK, LangGraph) run when installed and are
skipped with a note otherwise; their adapters are in ``benchmarks/peers/``.

    python benchmarks/turn_overhead.py [--turns 200] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import statistics
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEDIAN_BUDGET_US = 1500.0
PEER_FRACTION_BUDGET = 1 / 10
GROWTH_BUDGET = 1.3
WARMUP_TURNS = 5

FRAMEWORKS = {
    "lash": "peers.lash_peer",
    "pydantic-ai": "peers.pydantic_ai_peer",
    "openai-agents": "peers.openai_agents_peer",
    "langgraph": "peers.langgraph_peer",
}


@dataclass
class Figures:
    name: str
    version: str
    samples: list[float]
    early: slice
    late: slice

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.samples, n=10)[-1]

    @property
    def early_median(self) -> float:
        return statistics.median(self.samples[self.early])

    @property
    def late_median(self) -> float:
        return statistics.median(self.samples[self.late])

    @property
    def growth(self) -> float:
        return self.late_median / self.early_median


def windows(turns: int) -> tuple[slice, slice]:
    """Turns 20-40 and 180-200 of 200, scaled to ``turns``."""
    return slice(turns // 10, turns // 5), slice(turns * 9 // 10, turns)


def version_of(module: ModuleType) -> str:
    try:
        return metadata.version(module.PACKAGE)
    except metadata.PackageNotFoundError:
        return "?"


def us(value: float) -> str:
    return f"{value:,.0f} µs"


def run(module: ModuleType, turns: int) -> list[float]:
    gc.collect()
    samples: list[float] = asyncio.run(module.run_turns(turns))
    if len(samples) != turns:
        raise AssertionError(f"{module.NAME}: {len(samples)} samples for {turns} turns")
    return samples


def table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: list[Figures], turns: int) -> None:
    lash = next((f for f in results if f.name == "lash"), None)
    early, late = windows(turns)
    head = [
        "framework",
        "version",
        "median/turn",
        "p90/turn",
        f"turns {early.start}-{early.stop}",
        f"turns {late.start}-{late.stop}",
        "growth",
        "lash/peer",
    ]
    rows = [head]
    for f in results:
        ratio = "-"
        if lash is not None and f is not lash:
            r = lash.median / f.median
            ratio = f"1/{1 / r:.1f}" if r < 1 else f"{r:.2f}x"
        rows.append(
            [
                f.name,
                f.version,
                us(f.median),
                us(f.p90),
                us(f.early_median),
                us(f.late_median),
                f"{f.growth:.2f}x",
                ratio,
            ]
        )
    print()
    print(table(rows, right={2, 3, 4, 5, 6, 7}))
    print()

    if lash is None:
        print("budgets: not evaluated (lash did not run)")
        return
    peers = [f for f in results if f is not lash]
    checks: list[tuple[str, str, bool | None]] = [
        (
            f"lash median <= {us(MEDIAN_BUDGET_US)}",
            us(lash.median),
            lash.median <= MEDIAN_BUDGET_US,
        ),
    ]
    if peers:
        fastest = min(peers, key=lambda f: f.median)
        limit = fastest.median * PEER_FRACTION_BUDGET
        checks.append(
            (
                f"lash median <= 1/10 of fastest peer ({fastest.name} {us(fastest.median)}"
                f" -> {us(limit)})",
                us(lash.median),
                lash.median <= limit,
            )
        )
    else:
        checks.append(("lash median <= 1/10 of fastest peer", "no peer ran", None))
    checks.append(
        (
            f"lash growth (turns {late.start}-{late.stop} / {early.start}-{early.stop})"
            f" <= {GROWTH_BUDGET:.1f}x",
            f"{lash.growth:.2f}x",
            lash.growth <= GROWTH_BUDGET,
        )
    )
    verdict = {True: "within", False: "OVER", None: "n/a"}
    rows = [["budget (ARCHITECTURE.md)", "measured", "verdict"]]
    rows += [[name, value, verdict[ok]] for name, value, ok in checks]
    print(table(rows, right={1}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="turns in the session (>= 10)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(FRAMEWORKS),
        metavar="NAME",
        help=f"run only this framework (repeatable): {', '.join(FRAMEWORKS)}",
    )
    args = parser.parse_args()
    if args.turns < 10:
        parser.error("--turns must be at least 10")

    from peers import PeerUnavailable

    selected = [name for name in FRAMEWORKS if not args.only or name in args.only]
    print(
        f"turn overhead: {args.turns} turns in one session per framework; each turn = "
        f"2 tool calls + text answer (scripted model); warm-up: a separate "
        f"{WARMUP_TURNS}-turn session first"
    )
    print(f"python {sys.version.split()[0]}")

    modules: list[ModuleType] = []
    for name in selected:
        module = importlib.import_module(FRAMEWORKS[name])
        try:
            run(module, WARMUP_TURNS)
        except PeerUnavailable as exc:
            print(f"skipped {name}: {exc.reason}")
            continue
        modules.append(module)

    results = []
    for module in modules:
        samples = run(module, args.turns)
        early, late = windows(args.turns)
        results.append(Figures(module.NAME, version_of(module), samples, early, late))
    if results:
        report(results, args.turns)
    else:
        print("nothing ran")


if __name__ == "__main__":
    main()
