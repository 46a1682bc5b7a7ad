"""The HTTP producer: a Flask app factory with the widget's endpoint, health and stats.

Served by gunicorn (``nexus.web:create_app()``).  Every error the app returns has a JSON body;
nothing a client can send produces a 500; a database outage answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from . import __version__, admin, config, db, metrics
from .common import now
from .embedded import resolve_url
from .errors import DatabaseError, DatabaseUnavailable
from .validation import InvalidRequest, parse_json, validate_conversation

log = logging.getLogger(__name__)

#: Largest request body accepted (bytes); larger gets 413.
MAX_BODY_BYTES = 1024 * 1024
#: Seconds a client should wait before retrying while the database is unavailable.
RETRY_AFTER_S = 5
ESTIMATE = "<2 seconds"
TRANSPORT = "postgres-dramatiq"
#: The database role the web process works as (migration 0004; grants in 0006).
WEB_ROLE = "nexus_web"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then ``test_config`` overrides.

    ``test_config`` may carry ``SETTINGS`` (a :class:`nexus.config.Settings`) and
    ``DATABASE_URL``.
    """
    # No app-wide static route: the admin blueprint serves its own assets, behind its prefix.
    app = Flask(__name__, static_folder=None)
    # One byte of headroom: a chunked body is cut at this limit without an error, so the
    # view reads one byte more than allowed to tell "exactly at the limit" from "over it".
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    app.json.sort_keys = False
    if test_config:
        app.config.update(test_config)
    settings = app.config.get("SETTINGS") or config.load()
    app.config["SETTINGS"] = settings
    url = app.config.get("DATABASE_URL") or resolve_url(settings)
    # The web runs as nexus_web: functions only (enqueue, health, stats), no table at all.
    engine = db.make_engine(
        url, application_name="nexus-web", pool_size=4, max_overflow=4, role=WEB_ROLE
    )
    app.extensions["nexus_engine"] = engine
    if settings.allowed_origins:
        CORS(
            app,
            resources={r"/api/*": {"origins": list(settings.allowed_origins)}},
            methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type"],
            expose_headers=["X-Message-Id", "X-Queue-Id", "Retry-After"],
            max_age=600,
        )

    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InvalidRequest, _invalid_request)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)

    app.add_url_rule("/api/nexus/producer", view_func=produce, methods=["POST"])
    app.add_url_rule("/api/nexus/producer", view_func=health, methods=["GET"])
    app.add_url_rule("/api/nexus/stats", view_func=stats, methods=["GET"])
    app.after_request(_count_request)
    if settings.admin_token:  # otherwise /metrics and /admin* stay the JSON 404
        admin.init_app(app, settings.admin_token)
    return app


def _engine():
    return current_app.extensions["nexus_engine"]


# -- views ------------------------------------------------------------------------------------


def produce() -> tuple[Response, int, dict[str, str]]:
    if not request.is_json:
        raise InvalidRequest(415, "Content-Type must be application/json")
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(413, f"body must be at most {MAX_BODY_BYTES} bytes")
    body = parse_json(raw)
    conv = validate_conversation(body)
    metadata = dict(conv.metadata)
    metadata.update(
        {
            "enqueuedAt": now().isoformat(),
            "producerVersion": __version__,
            "url": _text(conv.metadata.get("url")) or request.headers.get("Referer"),
            "userAgent": _text(conv.metadata.get("userAgent")) or request.headers.get("User-Agent"),
        }
    )
    done = db.enqueue(_engine(), conv.messages, conv.session_id, conv.fingerprint, metadata)
    message_id = f"{done.queue_id}.v{done.version}"
    payload = {
        "status": "accepted",
        "messageId": message_id,
        "queueId": done.queue_id,
        "duplicate": done.duplicate,
        "estimatedProcessingTime": ESTIMATE,
    }
    return jsonify(payload), 202, {"X-Message-Id": message_id, "X-Queue-Id": done.queue_id}


def health() -> tuple[Response, int]:
    try:
        db.ping(_engine())
    except DatabaseUnavailable as exc:
        log.warning("health check failed: %s", exc)
        return jsonify(status="unhealthy", error="database unavailable"), 503
    except DatabaseError as exc:  # e.g. not migrated: nexus_health() missing or not granted
        log.error("health check failed: %s", exc)
        return jsonify(status="unhealthy", error="database not ready"), 503
    return jsonify(
        status="healthy",
        version=__version__,
        transport=TRANSPORT,
        connectionTestPassed=True,
        timestamp=now().isoformat(),
    ), 200


def stats() -> tuple[Response, int]:
    found = db.stats(_engine())
    broker = found["broker"]
    return jsonify(
        timestamp=now().isoformat(),
        window="24 hours",
        statuses=found["by_status"],
        oldestPendingAgeSec=found["oldest_pending_age_sec"],
        broker=broker,
        deadLetters=broker["dead_letters"],
    ), 200


def _count_request(response: Response) -> Response:
    rule = request.url_rule
    metrics.count_request(rule.rule if rule is not None else "unmatched", response.status_code)
    return response


# -- errors -----------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _error(status: int, message: str, details: object = None, headers=None):
    return jsonify(error=message, details=details), status, headers or {}


def _http_error(exc: HTTPException):
    headers = {}
    if exc.code == 405 and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    return _error(exc.code or 500, exc.name, exc.description, headers)


def _invalid_request(exc: InvalidRequest):
    return _error(exc.status, exc.message, exc.details)


def _database_unavailable(exc: DatabaseUnavailable):
    log.warning("database unavailable: %s", exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    return _error(503, "database unavailable, retry later", None, headers)


def _unexpected(exc: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _error(500, "internal error")
