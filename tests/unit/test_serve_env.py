"""configs/serve.env: the Ray Serve flags every launcher starts memserve's Ray with."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app import serve_env


def test_the_shipped_file_turns_on_haproxy_and_private_dirs_move_its_files() -> None:
    assert serve_env.read()["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    env, other = serve_env.private(), serve_env.private()
    base = env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]
    assert base != other["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]  # two apps never share
    for name in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                 "RAY_SERVE_HAPROXY_SERVER_STATE_FILE"):
        assert env[name].startswith(base + "/"), name
    assert int(env["RAY_SERVE_HAPROXY_METRICS_PORT"]) > 0
    # HAProxy puts the socket under the 56-character node id and refuses one of 98 bytes.
    assert len(env["RAY_SERVE_HAPROXY_SOCKET_PATH"]) + 57 <= 86


def test_comments_and_blank_lines_are_skipped_and_garbage_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.env"
    good.write_text("# a comment\n\nA=1\n B = two words \n")
    assert serve_env.read(good) == {"A": "1", "B": "two words"}
    bad = tmp_path / "bad.env"
    bad.write_text("JUST_A_NAME\n")
    with pytest.raises(ValueError, match="NAME=value"):
        serve_env.read(bad)
