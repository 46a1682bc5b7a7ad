"""Configuration, read from the environment in one place and validated at start-up.

A bad value raises :class:`~nexus.errors.ConfigError` whose message is one line naming the
variable; the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError


class DeprecatedModelWarning(UserWarning):
    """NEXUS_MODEL names a model the pinned SDK marks deprecated: it still works, until its
    end of life."""


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
    "NEXUS_ADMIN_TOKEN",
    "PROMETHEUS_MULTIPROC_DIR",
    "NEXUS_MAX_EXTRACT_CHARS",
    "NEXUS_PHONE_REGION",
    "NEXUS_PROSPECT_RETENTION_DAYS",
    "NEXUS_FALLBACK",
    "NEXUS_DAILY_TOKEN_BUDGET",
    "NEXUS_DEBOUNCE_MS",
)

#: A current Haiku-class model id listed by the pinned anthropic SDK (not deprecated).
DEFAULT_MODEL = "claude-haiku-5-5"
DEFAULT_PORT = 8000
DEFAULT_MAX_RETRIES = 5
DEFAULT_MIN_BACKOFF_MS = 2_000  #: milliseconds
DEFAULT_MAX_BACKOFF_MS = 300_000  #: milliseconds
EXTRACTORS = ("auto", "claude", "rules")
#: Shortest admin token accepted (characters): anything shorter is guessable.
MIN_ADMIN_TOKEN_CHARS = 16
#: Characters of a conversation the extractors read, newest kept.  Both extractors' cost
#: grows with it; the upper bound is the HTTP body limit (1 MiB).
DEFAULT_MAX_EXTRACT_CHARS = 24_000
MAX_EXTRACT_CHARS_RANGE = (1_000, 1_048_576)
#: ISO 3166 region assumed for a phone number typed without a country code.  The seed is
#: Colombian Spanish, and most visitors of a Spanish-language widget type their national
#: number ("311 456 7890"), so Colombia is the default; set it to the market you sell in.
DEFAULT_PHONE_REGION = "CO"
#: Longest prospect retention accepted (days): 100 years.
MAX_RETENTION_DAYS = 36_500
#: What extracts a row when Claude fails permanently: the rules extractor, or nothing (failed).
FALLBACKS = ("rules", "none")
#: Quiet time before a new version is extracted, by effective extractor (milliseconds): a paid
#: extraction waits for the chat to go quiet, a free one does not.
DEFAULT_DEBOUNCE_MS = {"claude": 30_000, "rules": 0}
MAX_DEBOUNCE_MS = 3_600_000  #: milliseconds


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
    #: Enables /metrics and /admin; None leaves them 404.
    admin_token: str | None = field(default=None, repr=False)
    #: prometheus_client's multiprocess directory (read by the library itself at import).
    metrics_dir: str | None = None
    max_extract_chars: int = DEFAULT_MAX_EXTRACT_CHARS
    phone_region: str = DEFAULT_PHONE_REGION
    #: Days a prospect not updated is kept; None keeps prospects for ever.
    prospect_retention_days: int | None = None
    fallback: str = "rules"
    #: Input + output tokens per UTC day; None = unlimited.
    daily_token_budget: int | None = None
    #: Milliseconds a new version waits for a newer one before it is extracted (0: none).
    debounce_ms: int = 0

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


def known_models() -> tuple[frozenset[str], dict[str, str]]:
    """The model ids the pinned anthropic SDK lists, and its deprecated ones (id -> end of life)."""
    from typing import get_args

    import anthropic.types
    from anthropic.resources.messages import DEPRECATED_MODELS

    literals = (a for a in get_args(anthropic.types.Model) if getattr(a, "__args__", None))
    ids = frozenset(i for lit in literals for i in get_args(lit) if isinstance(i, str))
    return ids, dict(DEPRECATED_MODELS)


def _model(env: Mapping[str, str]) -> str:
    model = env.get("NEXUS_MODEL", "").strip() or DEFAULT_MODEL
    ids, deprecated = known_models()
    if model not in ids:
        raise ConfigError(
            f"NEXUS_MODEL {model!r} is not a model the installed anthropic SDK lists "
            f"(e.g. {DEFAULT_MODEL})"
        )
    if model in deprecated:
        warnings.warn(
            f"NEXUS_MODEL {model!r} is deprecated (end of life {deprecated[model]}); "
            f"move to a current model such as {DEFAULT_MODEL}",
            DeprecatedModelWarning,
            stacklevel=3,
        )
    return model


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

    model = _model(env)
    fallback = env.get("NEXUS_FALLBACK", "").strip().lower() or "rules"
    if fallback not in FALLBACKS:
        raise ConfigError(f"NEXUS_FALLBACK must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    budget = None
    if env.get("NEXUS_DAILY_TOKEN_BUDGET", "").strip():
        budget = _int(env, "NEXUS_DAILY_TOKEN_BUDGET", 0, 0, 10**15)
    min_backoff = _int(env, "NEXUS_MIN_BACKOFF_MS", DEFAULT_MIN_BACKOFF_MS, 0, 86_400_000)
    max_backoff = _int(env, "NEXUS_MAX_BACKOFF_MS", DEFAULT_MAX_BACKOFF_MS, 0, 86_400_000)
    if max_backoff < min_backoff:
        raise ConfigError(
            f"NEXUS_MAX_BACKOFF_MS ({max_backoff}) must not be below "
            f"NEXUS_MIN_BACKOFF_MS ({min_backoff})"
        )

    effective = ("claude" if key else "rules") if extractor == "auto" else extractor
    debounce = _int(env, "NEXUS_DEBOUNCE_MS", DEFAULT_DEBOUNCE_MS[effective], 0, MAX_DEBOUNCE_MS)

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

    admin_token = env.get("NEXUS_ADMIN_TOKEN", "").strip() or None
    if admin_token is not None and (
        len(admin_token) < MIN_ADMIN_TOKEN_CHARS or not admin_token.isprintable()
    ):
        raise ConfigError(
            f"NEXUS_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} printable characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
        )

    metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or None
    if metrics_dir is not None and not os.path.isdir(metrics_dir):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR must be an existing directory, got {metrics_dir!r}"
        )

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
        admin_token=admin_token,
        metrics_dir=metrics_dir,
        max_extract_chars=_int(
            env, "NEXUS_MAX_EXTRACT_CHARS", DEFAULT_MAX_EXTRACT_CHARS, *MAX_EXTRACT_CHARS_RANGE
        ),
        phone_region=region,
        prospect_retention_days=(
            _int(env, "NEXUS_PROSPECT_RETENTION_DAYS", 0, 1, MAX_RETENTION_DAYS) or None
        ),
        fallback=fallback,
        daily_token_budget=budget,
        debounce_ms=debounce,
    )


def _phone_regions() -> frozenset[str]:
    """The regions libphonenumber knows (imported here only, at validation time)."""
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)
