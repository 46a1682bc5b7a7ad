"""Per-process resources of the actors: one engine and one extractor, made on first use."""

from functools import cache

from nexus import config, db
from nexus.embedded import resolve_url
from nexus.extraction import get_extractor


@cache
def settings() -> config.Settings:
    return config.load()


@cache
def engine():
    return db.make_engine(
        resolve_url(settings()), application_name="nexus-worker", pool_size=8, max_overflow=4
    )


@cache
def extractor():
    return get_extractor(settings(), engine())


@cache
def rules_extractor():
    """The offline extractor, whatever ``NEXUS_EXTRACTOR`` says: the debounce asks it whether
    a version holds something urgent."""
    from nexus.extraction.rules import RulesExtractor

    return RulesExtractor()
