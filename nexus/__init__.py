"""nexus: chat-widget conversations kept in PostgreSQL, prospects extracted by Dramatiq workers."""

__version__ = "1.0.0"
