"""LangGraph: a ReAct ``StateGraph`` (model node, ``ToolNode``) with an ``InMemorySaver``.

The graph is the one LangGraph's prebuilt ReAct agent builds: a model node,
a ``ToolNode`` and ``tools_condition`` between them, compiled with an in-memory
checkpointer. A turn is one ``ainvoke`` with the new user message on the same
``thread_id``; the checkpointer carries the conversation. The fake chat model is
a minimal ``BaseChatModel`` that emits both tool calls in one ``AIMessage``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from . import CALLS, PROMPT, PeerUnavailable, ToolCounter, check, check_turn

NAME = "langgraph"
PACKAGE = "langgraph"


async def run_turns(n: int, checkpointer: Any = None) -> list[float]:
    """Run ``n`` turns on one thread; per-turn wall times in microseconds.

    ``checkpointer`` defaults to an ``InMemorySaver``; the store benchmark passes
    LangGraph's SQLite saver to measure its database.
    """
    try:
        from langchain_core.language_models.chat_models import BaseChatModel
        from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
        from langchain_core.outputs import ChatGeneration, ChatResult
        from langchain_core.tools import StructuredTool
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.graph import START, MessagesState, StateGraph
        from langgraph.prebuilt import ToolNode, tools_condition
    except ImportError as exc:
        raise PeerUnavailable(f"{PACKAGE} not installed") from exc

    ids = itertools.count()

    class ScriptedChatModel(BaseChatModel):
        """Asks for the two ``add`` calls, then answers with the tool messages it was sent."""

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            raise NotImplementedError("the benchmark runs async")

        async def _agenerate(
            self, messages: list[BaseMessage], *args: Any, **kwargs: Any
        ) -> ChatResult:
            results: list[str] = []
            for message in reversed(messages):
                if not isinstance(message, ToolMessage):
                    break
                results.append(str(message.content))
            if results:
                reply = AIMessage(content=" and ".join(reversed(results)))
            else:
                calls: list[Any] = [
                    {
                        "name": "add",
                        "args": {"a": a, "b": b},
                        "id": f"call_{next(ids)}",
                        "type": "tool_call",
                    }
                    for a, b in CALLS
                ]
                reply = AIMessage(content="", tool_calls=calls)
            return ChatResult(generations=[ChatGeneration(message=reply)])

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    counter = ToolCounter()
    count = counter.add

    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return count(a, b)

    add_tool = StructuredTool.from_function(coroutine=add, name="add")
    model = ScriptedChatModel().bind_tools([add_tool])

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph: Any = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode([add_tool]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=checkpointer or InMemorySaver())

    config: Any = {"configurable": {"thread_id": "bench"}}
    samples: list[float] = []
    perf = time.perf_counter
    for turn in range(n):
        start = perf()
        state = await app.ainvoke({"messages": [HumanMessage(PROMPT)]}, config)
        samples.append((perf() - start) * 1e6)
        messages = state["messages"]
        check_turn(turn, counter, messages[-1].content)
        outputs = [m.content for m in messages[-3:-1] if isinstance(m, ToolMessage)]
        check(outputs == ["3", "7"], f"turn {turn}: tool messages {outputs!r}")
        check(len(messages) == 5 * (turn + 1), f"turn {turn}: thread has {len(messages)} messages")
    return samples
