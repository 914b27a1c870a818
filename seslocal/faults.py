"""Fault injection and optional send-rate enforcement for the send operations.

Faults apply to SendEmail and SendBulkEmail only. For each call one random draw decides:

* ``throttle`` (fraction): answer 429 TooManyRequestsException; nothing is recorded.
* ``error_5xx`` (fraction): answer 500 InternalFailure or 503 ServiceUnavailable; nothing
  is recorded -- unless ``error_5xx_after_accept`` is true, in which case the messages ARE
  recorded as accepted and then a 500 is returned. That is the ambiguous case a sender has
  to treat as "unknown": retrying it produces duplicates.
* ``latency_ms``: added to every send call before anything else happens.
* ``seed``: makes the sequence of draws reproducible.
"""

from __future__ import annotations

import enum
import json
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any


class Fault(enum.Enum):
    NONE = "none"
    THROTTLE = "throttle"
    ERROR_500 = "error_500"
    ERROR_503 = "error_503"
    ERROR_AFTER_ACCEPT = "error_after_accept"


@dataclass(frozen=True)
class FaultConfig:
    throttle: float = 0.0
    error_5xx: float = 0.0
    latency_ms: float = 0.0
    seed: int | None = None
    error_5xx_after_accept: bool = False

    @classmethod
    def from_obj(cls, obj: Any) -> FaultConfig:
        """Build from parsed JSON; raises ``ValueError`` with a readable reason."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise ValueError("faults must be a JSON object")
        unknown = set(obj) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")

        def fraction(name: str) -> float:
            value = obj.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            return float(value)

        throttle, error_5xx = fraction("throttle"), fraction("error_5xx")
        if throttle + error_5xx > 1.0:
            raise ValueError("throttle + error_5xx must not exceed 1")
        latency = obj.get("latency_ms", 0.0)
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise ValueError("latency_ms must be a non-negative number")
        seed = obj.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer or null")
        after = obj.get("error_5xx_after_accept", False)
        if not isinstance(after, bool):
            raise ValueError("error_5xx_after_accept must be true or false")
        return cls(throttle, error_5xx, float(latency), seed, after)

    @classmethod
    def from_json(cls, text: str | None) -> FaultConfig:
        if not text:
            return cls()
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"faults are not valid JSON: {exc}") from None
        return cls.from_obj(obj)

    def to_obj(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Thread-safe holder of the current fault settings and their random stream."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.initial = config or FaultConfig()
        self.set(self.initial)

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)

    def reset(self) -> None:
        self.set(self.initial)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def delay(self) -> None:
        """Wait the configured latency: the server calls it before a send call is handled,
        outside its one-call-at-a-time section, so slow calls still overlap."""
        latency_ms = self._config.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000.0)

    def draw(self) -> Fault:
        """Decide the fate of one send call."""
        config = self._config
        if not (config.throttle or config.error_5xx):
            return Fault.NONE
        with self._lock:
            roll = self._rng.random()
            coin = self._rng.random()
        if roll < config.throttle:
            return Fault.THROTTLE
        if roll < config.throttle + config.error_5xx:
            if config.error_5xx_after_accept:
                return Fault.ERROR_AFTER_ACCEPT
            return Fault.ERROR_500 if coin < 0.5 else Fault.ERROR_503
        return Fault.NONE


class RateLimiter:
    """Token bucket over recipients per second (SES's MaxSendRate counts recipients).

    Off unless enforcement is requested: the app is expected to pace itself using the
    MaxSendRate reported by GetAccount, and this lets tests check that it does.
    """

    def __init__(self, rate: float, enabled: bool) -> None:
        self.rate = rate
        self.enabled = enabled and rate > 0
        self._tokens = rate
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, count: int) -> bool:
        if not self.enabled:
            return True
        with self._lock:
            now = time.monotonic()
            # One second of burst, like SES's per-second rate.
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if count > self._tokens:
                return False
            self._tokens -= count
            return True

    def reset(self) -> None:
        with self._lock:
            self._tokens = self.rate
            self._stamp = time.monotonic()
