"""The facade with a real provider: ``LashCore(provider="openai:...")`` over loopback."""

from __future__ import annotations

from typing import Any

import pytest
from provider_support import fixture_reply, load_fixtures, run, serving

from lash import ConfigError, LashCore
from lash.kernel.outcome import Finished
from lash.runtime.activity import AssistantProseDelta

FIXTURES = {fx.name: fx for fx in load_fixtures("openai-chat")}


def test_a_turn_runs_through_the_openai_chat_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    fx = FIXTURES["text_stream"]

    async def main() -> tuple[Any, Any]:
        async with serving(fixture_reply(fx)) as server:
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loopback")
            monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
            core = LashCore(provider="openai:gpt-test")
            assert core.model == "gpt-test"
            async with core.session("s") as session:
                result = await session.run("hello")
            return result, server.received

    result, received = run(main())
    assert isinstance(result.outcome, Finished)
    assert result.text == fx.expected["text"]
    deltas = "".join(a.text for a in result.activities if isinstance(a, AssistantProseDelta))
    assert deltas == fx.expected["text"]  # streamed through the runtime
    (request,) = received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-loopback"
    body = request.json()
    assert body["model"] == "gpt-test"
    assert body["messages"][-1] == {"role": "user", "content": "hello"}


def test_a_missing_key_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        LashCore(provider="openai:gpt-test")
    with pytest.raises(ConfigError, match="provider 'nonsense'"):
        LashCore(provider="nonsense")
