"""The loopback control endpoint: ``/_control/<action>`` drives an emulator in another process.

``GET /_control/counters`` answers the request counters and downloads; ``POST
/_control/<action>`` with a JSON object of keyword arguments calls the ``Emulator`` method of that
name (``mutate_content``, ``move_file``, ``add_hostile_images``, ``set_faults``, ...). Only
loopback clients are answered: the endpoint rewrites the corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from nv_datalad.emulator.constants import is_loopback
from nv_datalad.emulator.replies import Reply, json_reply

PREFIX = "/_control/"


def control_reply(
    client: str,
    method: str,
    path: str,
    body: Callable[[], bytes],
    actions: Mapping[str, Callable[..., Any]],
    counters: Callable[[], dict[str, Any]],
) -> Reply:
    """The answer to one control request; ``body`` reads the request body when needed."""
    if not is_loopback(client):
        return json_reply(403, {"detail": "The control endpoint only answers loopback clients."})
    action = path[len(PREFIX) :].strip("/")
    if method in ("GET", "HEAD") and action == "counters":
        return json_reply(200, counters())
    if method != "POST" or action not in actions:
        return json_reply(404, {"detail": f"No control action {action!r} for {method}."})
    raw = body()
    try:
        arguments = json.loads(raw) if raw.strip() else {}
        if not isinstance(arguments, dict):
            raise ValueError("the body must be a JSON object of keyword arguments")
        result = actions[action](**arguments)
    except (TypeError, ValueError, KeyError) as exc:
        return json_reply(400, {"detail": f"{action}: {exc}"})
    return json_reply(200, {"ok": True, "result": result})
