"""Configuration, read from the environment in one place and validated at start-up.

A bad value raises :class:`~nexus.errors.ConfigError` whose message is one line naming the
variable; the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError

#: Every variable the project reads.  Tests clear these so a developer's shell cannot leak in.
VARIABLES = (
    "DATABASE_URL",
    "PORT",
    "ANTHROPIC_API_KEY",
    "NEXUS_EXTRACTOR",
    "NEXUS_MODEL",
    "NEXUS_MAX_RETRIES",
    "NEXUS_MIN_BACKOFF_MS",
    "NEXUS_MAX_BACKOFF_MS",
    "NEXUS_ALLOWED_ORIGINS",
    "NEXUS_MAX_EXTRACT_CHARS",
    "NEXUS_PHONE_REGION",
)

#: A current Haiku-class model id listed by the pinned anthropic SDK (not deprecated).
DEFAULT_MODEL = "claude-haiku-5-5"
DEFAULT_PORT = 8000
DEFAULT_MAX_RETRIES = 5
DEFAULT_MIN_BACKOFF_MS = 2_000  #: milliseconds
DEFAULT_MAX_BACKOFF_MS = 300_000  #: milliseconds
EXTRACTORS = ("auto", "claude", "rules")
#: Characters of a conversation the extractors read, newest kept.  Both extractors' cost
#: grows with it; the upper bound is the HTTP body limit (1 MiB).
DEFAULT_MAX_EXTRACT_CHARS = 24_000
MAX_EXTRACT_CHARS_RANGE = (1_000, 1_048_576)
#: ISO 3166 region assumed for a phone number typed without a country code.  The seed is
#: Colombian Spanish, and most visitors of a Spanish-language widget type their national
#: number ("311 456 7890"), so Colombia is the default; set it to the market you sell in.
DEFAULT_PHONE_REGION = "CO"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    port: int = DEFAULT_PORT
    anthropic_api_key: str | None = None
    extractor: str = "auto"
    model: str = DEFAULT_MODEL
    max_retries: int = DEFAULT_MAX_RETRIES
    min_backoff_ms: int = DEFAULT_MIN_BACKOFF_MS
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    max_extract_chars: int = DEFAULT_MAX_EXTRACT_CHARS
    phone_region: str = DEFAULT_PHONE_REGION

    @property
    def effective_extractor(self) -> str:
        """``claude`` or ``rules``: ``auto`` resolves to claude exactly when a key is set."""
        if self.extractor == "auto":
            return "claude" if self.anthropic_api_key else "rules"
        return self.extractor


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env

    url = env.get("DATABASE_URL", "").strip() or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL must be a postgresql:// URL")

    extractor = env.get("NEXUS_EXTRACTOR", "").strip().lower() or "auto"
    if extractor not in EXTRACTORS:
        raise ConfigError(
            f"NEXUS_EXTRACTOR must be one of {', '.join(EXTRACTORS)}, got {extractor!r}"
        )
    key = env.get("ANTHROPIC_API_KEY", "").strip() or None
    if extractor == "claude" and not key:
        raise ConfigError("ANTHROPIC_API_KEY must be set when NEXUS_EXTRACTOR=claude")

    model = env.get("NEXUS_MODEL", "").strip() or DEFAULT_MODEL
    min_backoff = _int(env, "NEXUS_MIN_BACKOFF_MS", DEFAULT_MIN_BACKOFF_MS, 0, 86_400_000)
    max_backoff = _int(env, "NEXUS_MAX_BACKOFF_MS", DEFAULT_MAX_BACKOFF_MS, 0, 86_400_000)
    if max_backoff < min_backoff:
        raise ConfigError(
            f"NEXUS_MAX_BACKOFF_MS ({max_backoff}) must not be below "
            f"NEXUS_MIN_BACKOFF_MS ({min_backoff})"
        )

    origins = []
    for origin in env.get("NEXUS_ALLOWED_ORIGINS", "").split(","):
        origin = origin.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(
                f"NEXUS_ALLOWED_ORIGINS entries must be http(s) origins, got {origin!r}"
            )
        origins.append(origin)

    region = env.get("NEXUS_PHONE_REGION", "").strip().upper() or DEFAULT_PHONE_REGION
    if region not in _phone_regions():
        raise ConfigError(
            f"NEXUS_PHONE_REGION must be a two-letter region code such as CO, MX or ES, "
            f"got {region!r}"
        )

    return Settings(
        database_url=url,
        port=_int(env, "PORT", DEFAULT_PORT, 1, 65_535),
        anthropic_api_key=key,
        extractor=extractor,
        model=model,
        max_retries=_int(env, "NEXUS_MAX_RETRIES", DEFAULT_MAX_RETRIES, 0, 100),
        min_backoff_ms=min_backoff,
        max_backoff_ms=max_backoff,
        allowed_origins=tuple(origins),
        max_extract_chars=_int(
            env, "NEXUS_MAX_EXTRACT_CHARS", DEFAULT_MAX_EXTRACT_CHARS, *MAX_EXTRACT_CHARS_RANGE
        ),
        phone_region=region,
    )


def _phone_regions() -> frozenset[str]:
    """The regions libphonenumber knows (imported here only, at validation time)."""
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)
