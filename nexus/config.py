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
    "NEXUS_ADMIN_TOKEN",
    "PROMETHEUS_MULTIPROC_DIR",
    "NEXUS_PROSPECT_RETENTION_DAYS",
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
#: Longest prospect retention accepted (days): 100 years.
MAX_RETENTION_DAYS = 36_500


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
    #: Days a prospect not updated is kept; None keeps prospects for ever.
    prospect_retention_days: int | None = None

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
        prospect_retention_days=(
            _int(env, "NEXUS_PROSPECT_RETENTION_DAYS", 0, 1, MAX_RETENTION_DAYS) or None
        ),
    )
