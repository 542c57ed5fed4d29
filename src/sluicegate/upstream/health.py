"""What the gateway saw of each backend: resting after Retry-After, outlier ejection,
active health checks, load, latency."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime

from sluicegate.upstream.policy import OutlierPolicy

EWMA_TAU = 10.0  # seconds for a latency observation to fade to 1/e
EWMA_MIN_STEP = 0.3  # each new sample moves the average at least this much, however close the samples
MAX_EJECTION = 300.0  # seconds: the longest ejection, however often a backend was ejected
_GATEWAY_ERRORS = (502, 503, 504)


class BackendState:
    """The mutable record of one backend (keyed by its AIServiceBackend name)."""

    __slots__ = (
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "down",
        "ejected_at",
        "ejected_until",
        "ejections",
        "ewma",
        "ewma_at",
        "outstanding",
        "rest_until",
        "unhealthy",
    )

    def __init__(self) -> None:
        self.rest_until = 0.0  # monotonic time; a Retry-After asked us to wait until then
        self.ejected_until = 0.0
        self.ejected_at = 0.0
        self.ejections = 0  # multiplies the base ejection time; decays with successes
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.outstanding = 0  # attempts in flight
        self.ewma = 0.0  # peak EWMA of the time to the response head, seconds; 0 = not measured yet
        self.ewma_at = 0.0
        self.down: set[object] = set()  # endpoints active health checks found unhealthy
        self.unhealthy = False  # every endpoint is down: skipped like an ejected backend

    def available_at(self) -> float:
        """When the backend may be tried again without being the last resort."""
        return max(self.rest_until, self.ejected_until)


class Health:
    """Per-backend state shared by every config of the process (it survives reloads)."""

    def __init__(self) -> None:
        self.states: dict[str, BackendState] = {}

    def state(self, name: str) -> BackendState:
        """The record of one backend, created on first use."""
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = BackendState()
        return state

    def rest(self, name: str, seconds: float, now: float) -> None:
        """Skip the backend for `seconds` (a 429 or 503 came with Retry-After)."""
        state = self.state(name)
        state.rest_until = max(state.rest_until, now + seconds)

    def mark(self, name: str, endpoint: object, healthy: bool, endpoints: int) -> bool:
        """An active health check's verdict on one of the backend's `endpoints`; True when the backend's
        health changed (it is unhealthy while all its endpoints are down)."""
        state = self.state(name)
        if healthy:
            state.down.discard(endpoint)
        else:
            state.down.add(endpoint)
        was, state.unhealthy = state.unhealthy, len(state.down) >= max(endpoints, 1)
        return was != state.unhealthy

    def clear_marks(self, keep: set[str]) -> list[str]:
        """Forget active-check verdicts of backends no longer checked; their names, when they were down."""
        revived = []
        for name, state in self.states.items():
            if name not in keep and state.down:
                if state.unhealthy:
                    revived.append(name)
                state.down.clear()
                state.unhealthy = False
        return revived

    def observe_latency(self, name: str, seconds: float, now: float) -> None:
        """Peak EWMA: a slower sample takes over at once, a faster one fades in with time and count."""
        state = self.state(name)
        if seconds >= state.ewma or state.ewma_at == 0.0:
            state.ewma = seconds
        else:
            keep = min(math.exp(-(now - state.ewma_at) / EWMA_TAU), 1.0 - EWMA_MIN_STEP)
            state.ewma = state.ewma * keep + seconds * (1.0 - keep)
        state.ewma_at = now

    def succeeded(self, name: str) -> None:
        """A response below 500 resets the consecutive-error counts."""
        state = self.states.get(name)
        if state is None:
            return
        state.consecutive_5xx = state.consecutive_gateway = state.consecutive_local = 0
        if state.ejections and state.ejected_until <= time.monotonic():
            state.ejections -= 1

    def failed(self, name: str, status: int | None, policy: OutlierPolicy, now: float) -> bool:
        """Count a 5xx (or a local failure when status is None); True when this ejects the backend."""
        state = self.state(name)
        if status is None and policy.split_local:
            state.consecutive_local += 1
        else:
            status = status or 503  # a local-origin failure counts as a 503 unless split out
            if status < 500:
                self.succeeded(name)
                return False
            state.consecutive_5xx += 1
            state.consecutive_gateway = state.consecutive_gateway + 1 if status in _GATEWAY_ERRORS else 0
        if state.ejected_until > now:
            return False
        if not (
            _reached(state.consecutive_5xx, policy.consecutive_5xx)
            or _reached(state.consecutive_gateway, policy.consecutive_gateway)
            or _reached(state.consecutive_local, policy.consecutive_local)
        ):
            return False
        state.ejections += 1
        state.ejected_at = now
        state.ejected_until = now + min(policy.base_ejection * state.ejections, MAX_EJECTION)
        state.consecutive_5xx = state.consecutive_gateway = state.consecutive_local = 0
        return True


def _reached(count: int, threshold: int | None) -> bool:
    return bool(threshold) and count >= threshold  # type: ignore[operator]


def retry_after(headers: list[tuple[bytes, bytes]], now_wall: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        text = value.decode("latin-1").strip()
        try:
            return max(float(text), 0.0)
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        return max(when - (time.time() if now_wall is None else now_wall), 0.0)
    return None


HEALTH = Health()  # the process's one record; tests make their own
