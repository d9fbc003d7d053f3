"""`tracking_context`: per-call metadata that nests, merges and follows tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fluxgate_async import FluxGate, TrackedUser, tracking_context
from fluxgate_async._tracking_context import current_context, metadata_fields
from fluxgate_async.testing import FakeCollector

from .integrations.helpers import recorded


def test_nested_blocks_merge_and_the_inner_value_wins() -> None:
    """An inner block overrides key by key; `None` keeps the outer value; exit restores it."""
    with tracking_context(feature="chat", user="u-1", plan="pro"):
        with tracking_context(feature="search", user=None, step="rank") as inner:
            assert dict(inner) == {
                "feature": "search",
                "user": "u-1",
                "plan": "pro",
                "step": "rank",
            }
        assert dict(current_context()) == {"feature": "chat", "user": "u-1", "plan": "pro"}
    assert dict(current_context()) == {}


def test_the_merged_context_is_read_only() -> None:
    """The mapping a block yields cannot be changed behind the context's back."""
    with tracking_context(feature="chat") as merged, pytest.raises(TypeError):
        merged["feature"] = "other"  # type: ignore[index]


async def test_context_follows_tasks_and_stays_apart_between_them() -> None:
    """A task created in a block sees its metadata; concurrent tasks never see each other's."""
    seen: dict[str, Any] = {}
    both_inside = asyncio.Barrier(2)

    async def request(user: str) -> None:
        with tracking_context(user=user):
            await both_inside.wait()
            seen[user] = current_context()["user"]

    with tracking_context(feature="api"):
        child = asyncio.create_task(asyncio.sleep(0, result=current_context()))
        await asyncio.gather(request("a"), request("b"))
    assert dict(await child) == {"feature": "api"}
    assert seen == {"a": "a", "b": "b"}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"feature": 3}, "AiEventMetadata.feature must be a str"),
        ({"user": 42}, "AiEventMetadata.user must be a str or a TrackedUser"),
        ({"session_id": ["s"]}, "AiEventMetadata.session_id must be a str"),
        ({"sessionId": "s"}, "extra key 'sessionId' collides with a named field"),
    ],
)
def test_bad_values_are_refused_on_entry_naming_the_field(
    fields: dict[str, Any], match: str
) -> None:
    """A value that does not fit its field raises when the block is entered, naming the field."""
    with pytest.raises((TypeError, ValueError), match=match), tracking_context(**fields):
        pass
    assert dict(current_context()) == {}


def test_metadata_fields_splits_named_fields_from_extra() -> None:
    """Named fields land in their attributes; everything else goes to `extra`."""
    user = TrackedUser("u-1", email="ada@example.com")
    metadata = metadata_fields({"feature": "f", "user": user, "conversation_id": "c", "tier": 2})
    assert (metadata.feature, metadata.user, metadata.conversation_id) == ("f", user, "c")
    assert dict(metadata.extra) == {"tier": 2}


async def test_context_metadata_reaches_the_event(fg: FluxGate, collector: FakeCollector) -> None:
    """`fg.track` inside a block records the block's metadata, a TrackedUser included."""
    user = TrackedUser("u-7", name="Ada", monthly_revenue=49.99)
    with tracking_context(feature="chat", user=user, conversation_id="c-1", tier="gold"):
        async with fg.track(model="m", provider="p") as call:
            call.set_usage(1, 2)
    [event] = await recorded(fg, collector)
    assert event["metadata"] == {
        "feature": "chat",
        "user": {"id": "u-7", "name": "Ada", "monthlyRevenue": 49.99},
        "conversationId": "c-1",
        "tier": "gold",
    }
