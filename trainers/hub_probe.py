"""Is the Hugging Face Hub usable right now? Answered in ~0.1 s, for model and dataset loaders alike.

Without a network huggingface_hub retries each file with backoff before giving up (measured here: ~50 s for
one model id through transformers, ~24 s for one dataset name through `datasets.load_dataset`). A loader
asks `hub_plan(...)` first: in HF offline mode, or when a TCP connection to the Hub (or to the HTTPS proxy
in front of it) does not open within a few seconds, it stays in the local cache (models) or fails at once
with its how-to-provide paragraph (datasets).

How it plugs in: `trainers.models.hub.load_pretrained` (every family's loader) and
`trainers.data.sources.load_source` call it. Only the probe lives here, on the lowest floor, so data sources
and model loading share it; loading models is `trainers.models.hub`.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

HUB_PROBE_TIMEOUT_S = 3.0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline_requested() -> bool:
    """HF offline mode, read at call time (huggingface_hub and datasets read it once, at import)."""
    from huggingface_hub import constants

    return (
        constants.HF_HUB_OFFLINE
        or _env_true("HF_HUB_OFFLINE")
        or _env_true("TRANSFORMERS_OFFLINE")
        or _env_true("HF_DATASETS_OFFLINE")
    )


def _can_connect(host: str, port: int, timeout: float) -> bool:
    """TCP connect in a daemon thread, so a DNS lookup that ignores socket timeouts cannot block the caller."""
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def hub_reachable(endpoint: str | None = None, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub (or to the HTTPS proxy in front of it) opens within `timeout`."""
    from huggingface_hub import constants

    url = urlsplit(endpoint or constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 8080
    return bool(host) and _can_connect(host, port, timeout)


def looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `namespace/name`; anything else can only mean a filesystem path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


@dataclass(frozen=True)
class HubPlan:
    """How to consult the Hub for one id: `local_only` (cache only) and, if that fails, why."""

    local_only: bool
    offline_mode: bool
    reachable: bool

    def problem(self, what: str) -> str:
        """`what` is e.g. "model 'org/name'"; the sentence fragment a not-found error starts with."""
        not_cached = f"{what} is not in the local Hugging Face cache and the Hub cannot be reached"
        if self.offline_mode:
            return f"{not_cached} (HF offline mode is on: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)"
        if not self.reachable:
            return not_cached
        return f"{what} could not be loaded from the Hugging Face cache or the Hub"


def hub_plan() -> HubPlan:
    """Offline mode wins; otherwise probe the Hub once (a few seconds at most, ~0.1 s when DNS fails)."""
    if offline_requested():
        return HubPlan(local_only=True, offline_mode=True, reachable=False)
    reachable = hub_reachable()
    return HubPlan(local_only=not reachable, offline_mode=False, reachable=reachable)
