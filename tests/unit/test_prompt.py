from __future__ import annotations

from serve_app.core.prompt import build_messages


def test_memories_and_caller_system_merge_into_one_system_turn() -> None:
    out = build_messages(
        "Be brief.",
        [{"role": "system", "content": "Speak French."}, {"role": "user", "content": "Hi"}],
        ["Likes tea", "Lives in Lyon"],
    )
    assert [m["role"] for m in out] == ["system", "user"]
    system = out[0]["content"]
    assert system.startswith("Be brief.") and "Speak French." in system
    assert "- Likes tea\n- Lives in Lyon" in system


def test_no_memories_no_memory_block() -> None:
    out = build_messages("", [{"role": "user", "content": "Hi"}], [])
    assert out == [{"role": "user", "content": "Hi"}]
