"""The environment memserve's Ray processes start with (`configs/serve.env`).

Ray Serve reads these flags when each of its processes starts, so they cannot live in
the Serve config; every launcher (`make run`, the tests, the benchmarks) takes them from
this one file. `private` also moves HAProxy's files and metrics port, which default to
fixed machine-wide places, into a fresh directory, so two apps on one machine (a test
beside a `make run`) do not share them.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parents[1] / "configs" / "serve.env"


def read(path: Path = ENV_FILE) -> dict[str, str]:
    """`NAME=value` lines; blank lines and `#` comments are skipped."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{path}: not NAME=value: {line!r}")
            env[name.strip()] = value.strip()
    return env


def private() -> dict[str, str]:
    """The serve environment, with HAProxy's config, socket, state and metrics port private.

    The directory is a short one under /tmp, not the caller's: HAProxy nests its admin
    socket under the 56-character Ray node id and refuses a socket path much over 90
    bytes (Ray's default, /tmp/haproxy-serve/<node id>/admin.sock, is 86)."""
    env = read()
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        haproxy = Path(tempfile.mkdtemp(prefix="msh", dir="/tmp"))
        env.update(
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=str(haproxy / "haproxy.cfg"),
            RAY_SERVE_HAPROXY_SOCKET_PATH=str(haproxy / "a.sock"),
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=str(haproxy),
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=str(haproxy / "server-state"),
            RAY_SERVE_HAPROXY_METRICS_PORT=str(_free_port()),
        )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
