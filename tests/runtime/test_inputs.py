"""Turn input with images: stored before the turn, referenced in history, committed, kept."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from runtime_support import run

from lash import ConfigError, Image, LashCore, TurnInput
from lash.attachments import sweep
from lash.kernel.llm import ImageBlock, TextBlock
from lash.kernel.messages import PartKind
from lash.kernel.outcome import Finished, StopReason
from lash.runtime.effects import DurabilityTier
from lash.testing import Reply, ScriptedProvider

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 64

TIMEOUT = 10.0  # seconds before a hung test fails (stores on disk are slower)


def test_images_are_stored_referenced_and_committed(tmp_path: Path) -> None:
    provider = ScriptedProvider([Reply(text="two images")])

    async def main() -> tuple[Any, Any, Any]:
        async with LashCore(
            provider=provider, model="m", store=f"sqlite:///{tmp_path / 'data'}"
        ) as core:
            assert core.attachments.tier is DurabilityTier.DURABLE
            async with core.session("s") as session:
                result = await session.run(
                    TurnInput(
                        text="what are these?",
                        images=(
                            Image(data=PNG, mime="image/png"),
                            Image(data=JPEG, mime="image/jpg"),
                        ),
                    )
                )
            entries = await core.attachment_manifest.entries(session_id="s")
            statuses = {e.attachment_id: e.committed_at is not None for e in entries}
            report = await sweep(core.attachments, core.attachment_manifest, grace_seconds=0)
            kept = await core.attachments.get(hashlib.sha256(PNG).hexdigest())
            return result, statuses, (report, kept)

    result, statuses, (report, kept) = run(main(), TIMEOUT)
    assert isinstance(result.outcome, Finished)
    user = result.messages[0]
    assert [p.kind for p in user.parts] == [PartKind.TEXT, PartKind.IMAGE, PartKind.IMAGE]
    refs = [p.attachment for p in user.parts[1:]]
    assert [(r.id, r.mime, r.byte_len) for r in refs if r] == [
        (hashlib.sha256(PNG).hexdigest(), "image/png", len(PNG)),
        (hashlib.sha256(JPEG).hexdigest(), "image/jpeg", len(JPEG)),
    ]
    request = provider.requests[0]
    assert request.attachments == tuple(refs)  # references only; no bytes in the request
    blocks = request.messages[-1].blocks
    assert [type(b) for b in blocks] == [TextBlock, ImageBlock, ImageBlock]
    assert statuses == {r.id: True for r in refs if r}  # both committed for this session
    assert report.deleted == 0  # committed bytes are never swept
    assert kept == PNG
    assert (tmp_path / "data" / "attachments").is_dir()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            TurnInput(images=(Image(data=b"", mime="image/png"),)),
            "images[0]: data must be non-empty",
        ),
        (TurnInput(images=(Image(data=b"x", mime="text/plain"),)), "'text/plain' is not an image"),
        (
            TurnInput(text="ok", images=(Image(data=PNG, mime="image/png"), "nope")),  # type: ignore[arg-type]
            "images[1] must be an Image, got str",
        ),
        (TurnInput(text=7), "text must be a string, got int"),  # type: ignore[arg-type]
        ([PNG], "turn input must be a string or a TurnInput, got list"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(bad: Any, message: str) -> None:
    provider = ScriptedProvider([])

    async def main() -> tuple[Any, list[str], Any]:
        core = LashCore(provider=provider, model="m")
        async with core.session("s") as session:
            result = await session.run(bad)
            return result, list(await core.attachments.list_ids()), session.revision

    result, stored, revision = run(main(), TIMEOUT)
    assert result.outcome.reason is StopReason.INVALID_INPUT  # type: ignore[union-attr]
    assert message in result.outcome.message  # type: ignore[union-attr]
    assert stored == []  # the valid first image was not written either
    assert revision is None
    assert provider.calls == 0


def test_attachment_urls_and_tier_checks(tmp_path: Path) -> None:
    provider = ScriptedProvider([])
    core = LashCore(provider=provider, model="m", attachments=f"sqlite:///{tmp_path / 'a.db'}")
    assert core.attachments.tier is DurabilityTier.DURABLE
    assert (tmp_path / "a.db.manifest").exists()
    core = LashCore(provider=provider, model="m", attachments=f"file:///{tmp_path / 'files'}")
    assert core.attachment_manifest.tier is DurabilityTier.DURABLE
    with pytest.raises(ConfigError, match="attachments 'ftp://x'"):
        LashCore(provider=provider, model="m", attachments="ftp://x")
    with pytest.raises(ConfigError, match="the attachments facet is inline"):
        LashCore(
            provider=provider,
            model="m",
            store=f"sqlite:///{tmp_path / 's'}",
            attachments="memory://",
        )
    with pytest.raises(ConfigError, match="it is not an attachment store"):
        LashCore(provider=provider, model="m", attachments=object())  # type: ignore[arg-type]


def test_a_turn_aborted_before_it_starts_stores_no_images() -> None:
    from lash.runtime.plugins import AbortTurn, PluginRegistrar, TurnHookContext

    class Guard:
        id = "guard"

        def register(self, registrar: PluginRegistrar) -> None:
            async def stop(ctx: TurnHookContext) -> AbortTurn:
                return AbortTurn(message="not now")

            registrar.before_turn(stop)

    async def main() -> tuple[Any, list[str], list[Any]]:
        core = LashCore(provider=ScriptedProvider([]), model="m", plugins=[Guard()])
        async with core.session("s") as session:
            result = await session.run(TurnInput(images=(Image(data=PNG, mime="image/png"),)))
        ids = list(await core.attachments.list_ids())
        return result, ids, await core.attachment_manifest.entries()

    result, ids, entries = run(main(), TIMEOUT)
    assert result.outcome.reason is StopReason.PLUGIN_ABORT  # type: ignore[union-attr]
    assert ids == []  # no bytes written
    assert entries == []  # and no intent recorded
