"""Which model each captioning endpoint serves (GET /v1/models), so that one run is one model.

With several `--server` endpoints, one serving another model captioned about a third of
the tiles silently (issue 22). Before the first tile each endpoint is asked what it serves:
when the model asked for is listed by some endpoints, an endpoint listing others only
leaves the run, named. Endpoints that do not answer /v1/models are not judged by it.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

from .http_transport import Target

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0


def served_models(target: Target) -> Optional[set]:
    """The model ids the endpoint lists, or None when it does not say (any failure)."""
    path = target.path.split("?")[0]
    if not path.endswith("/chat/completions"):
        return None
    try:
        conn = target.connection(TIMEOUT_S)
        try:
            conn.request("GET", path[: -len("chat/completions")] + "models", headers=dict(target.headers))
            response = conn.getresponse()
            body = response.read(1 << 20)
        finally:
            conn.close()
        if response.status != 200:
            return None
        data = json.loads(body)
        ids = {str(item["id"]) for item in data["data"] if isinstance(item, dict) and "id" in item}
        return ids or None
    except Exception:  # noqa: BLE001 - an endpoint that cannot say is judged by its answers only
        return None


def wrong_model(model: str, listed: dict) -> dict:
    """{endpoint index: message} for endpoints that serve other models while another serves `model`.

    `listed`: {index: (url, ids or None)}."""
    if not any(ids and model in ids for _, ids in listed.values()):
        known = {url: sorted(ids) for url, ids in listed.values() if ids}
        if len({tuple(v) for v in known.values()}) > 1:
            log.warning("The captioning servers list different models (%s); none lists %r: check that they "
                        "serve the same model.", "; ".join(f"{u}: {', '.join(v)}" for u, v in known.items()), model)
        return {}
    return {index: (f"The captioning server at {url} serves {', '.join(sorted(ids))}, not {model}: it was left "
                    "out of this run so that every tile is captioned by one model. Give --server only the URLs "
                    f"of servers of {model}.")
            for index, (url, ids) in listed.items() if ids and model not in ids}
