"""`${NAME}` placeholders in settings, filled from the environment when a replica uses them.

Secrets such as a Redis password stay out of the Serve config (which Ray Serve stores, the
RayService object carries and the Ray dashboard shows): the config names an environment
variable, `redis://:${MEMSERVE_REDIS_PASSWORD}@host:6379/0`, and the process that opens the
connection fills it in from its own environment. Never at validation: Ray Serve's controller
validates the config in a process that need not have the variable.

The syntax is `string.Template`'s, braced form only: `${NAME}` is replaced by the variable's
value as is (no URL escaping: a password with reserved characters must be stored
percent-encoded), `$$` is a literal `$`, and any other `$` is an error, so that a mistyped
`$NAME` fails at once instead of being sent to Redis as a password. Errors name the setting,
the variable or the position, never the text or any value, and nothing here logs.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping

# `$$`, `${NAME}`, or a `$` that is neither (string.Template's groups, braced form only).
_PLACEHOLDER = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[_A-Za-z][_A-Za-z0-9]*)\}|(?P<invalid>))")


class EnvExpansionError(ValueError):
    """A placeholder that cannot be filled; the message names no secret."""


def _matches(text: str, what: str) -> list[re.Match[str]]:
    found = list(_PLACEHOLDER.finditer(text))
    for m in found:
        if m.group("invalid") is not None:
            raise EnvExpansionError(
                f"{what}: '$' at position {m.start()} starts neither '${{NAME}}' nor '$$' "
                "(write '$$' for a literal '$')"
            )
    return found


def env_placeholders(text: str, what: str = "value") -> list[str]:
    """The variables `text` names, in order; checks the syntax without reading the environment."""
    return [m.group("braced") for m in _matches(text, what) if m.group("braced") is not None]


def expand_env(text: str, what: str = "value", environ: Mapping[str, str] | None = None) -> str:
    """`text` with each `${NAME}` replaced by the environment variable NAME and `$$` by `$`.

    Raises EnvExpansionError naming `what` and the variable when one is not set (in this
    process: on Kubernetes, in the pod that runs the replica). The result may hold a secret:
    do not log it.
    """
    env = os.environ if environ is None else environ
    matches = _matches(text, what)
    missing = [name for m in matches if (name := m.group("braced")) is not None and name not in env]
    if missing:
        names = list(dict.fromkeys(missing))
        noun = "variable" if len(names) == 1 else "variables"
        raise EnvExpansionError(
            f"{what} needs the environment {noun} {', '.join(names)}, not set in this process "
            f"(host {socket.gethostname()}, pid {os.getpid()}): set it where the replicas run"
        )

    def fill(m: re.Match[str]) -> str:
        name = m.group("braced")
        return "$" if name is None else env[name]

    return _PLACEHOLDER.sub(fill, text)
