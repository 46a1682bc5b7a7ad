"""The admin surface: ``GET /metrics`` and the ``/admin`` dashboard, behind ``NEXUS_ADMIN_TOKEN``.

Registered only when the token is set (otherwise these paths are the app's JSON 404).  Every
request needs the token: ``Authorization: Bearer <token>``, or a browser session opened by the
login form (Flask's signed cookie: HttpOnly, SameSite=Strict, keyed by a secret derived from
the token, so rotating the token ends every session).  The forms that change something
(Retry, Requeue, log out) are POSTs carrying a per-session CSRF token.  The login page and the
package's own CSS are the only paths served without the token.

The dashboard is rendered on the server (Jinja, autoescaped: conversation text is escaped
everywhere) and works offline: its CSS ships in the package and the chart is inline SVG drawn
here, so there is no JavaScript and no front-end build.  Data comes from ``nexus.ops`` and the
admin functions of ``nexus.db``: functions only, as the web's database role requires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface

from . import db, metrics, ops

bp = Blueprint(
    "admin",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/admin/static",
)

#: Seconds between two automatic refreshes of the dashboard.
REFRESH_S = 15
#: Minutes shown by the chart (and the window of the processing-time percentiles).
CHART_MINUTES = 60
#: Rows shown per table.
TABLE_ROWS = 50
#: A browser session lasts this long (then log in again).
SESSION_LIFETIME = dt.timedelta(hours=8)
#: Drawing area of the chart, in SVG user units.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 180, 28
#: Drawn in this order: accepted (dashed) last, over the others.
SERIES = ("completed", "failed", "accepted")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PUBLIC_ENDPOINTS = {"admin.login", "admin.static"}


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure


def init_app(app: Flask, token: str) -> None:
    """Enable the admin surface on ``app``, guarded by ``token``."""
    app.extensions["nexus_admin_token"] = token.encode()
    # Derived, not random: every gunicorn worker computes the same key with no extra setting.
    app.secret_key = hmac.new(token.encode(), b"nexus admin session v1", hashlib.sha256).digest()
    app.config.update(
        SESSION_COOKIE_NAME="nexus_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = _SessionInterface()
    app.register_blueprint(bp)


def _token() -> bytes:
    return current_app.extensions["nexus_admin_token"]


def _matches(candidate: str) -> bool:
    return hmac.compare_digest(candidate.encode(), _token())


def _unauthorized(message: str) -> tuple[Response, int, dict[str, str]]:
    body = jsonify(error=message, details=None)
    return body, 401, {"WWW-Authenticate": 'Bearer realm="nexus-admin"'}


@bp.before_request
def _authenticate():
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and _matches(credential.strip()):
            g.admin_via = "bearer"
            return None
        return _unauthorized("invalid admin token")
    if session.get("admin") is True:
        g.admin_via = "session"
        if request.method == "POST" and not _csrf_ok():
            return jsonify(error="missing or invalid CSRF token", details=None), 403
        return None
    if request.method == "GET" and request.endpoint == "admin.dashboard":
        return redirect(url_for("admin.login"))
    return _unauthorized("admin token required (Authorization: Bearer <token>, or log in)")


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    return isinstance(expected, str) and hmac.compare_digest(given.encode(), expected.encode())


@bp.after_request
def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# -- views ------------------------------------------------------------------------------------


@bp.get("/metrics")
def scrape():
    engine = current_app.extensions["nexus_engine"]
    return Response(metrics.render(engine), mimetype=None, content_type=metrics.CONTENT_TYPE)


@bp.route("/admin/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("admin/login.html", error=None)
    if not _matches(request.form.get("token", "")):
        return render_template("admin/login.html", error="Wrong token."), 401
    session.clear()
    session.permanent = True
    session["admin"] = True
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(url_for("admin.dashboard"), 303)


@bp.post("/admin/logout")
def logout():
    session.clear()
    return redirect(url_for("admin.login"), 303)


@bp.get("/admin")
def dashboard():
    engine = current_app.extensions["nexus_engine"]
    overview = db.admin_overview(engine, CHART_MINUTES)
    return render_template(
        "admin/dashboard.html",
        overview=overview,
        chart=chart(overview["minutes"]),
        failed=ops.failed_rows(engine, limit=TABLE_ROWS),
        dead=ops.dead_letters(engine, limit=TABLE_ROWS),
        hot=ops.prospects(engine, momento="caliente", limit=TABLE_ROWS),
        refresh_s=REFRESH_S,
        csrf=session.get("csrf", ""),
        now=dt.datetime.now(dt.UTC),
    )


@bp.post("/admin/retry")
def retry():
    """Re-open failed rows (form or JSON field ``id``, repeatable) as new versions."""
    return _act(ops.retry_rows, "retried", "row")


@bp.post("/admin/requeue")
def requeue():
    """Put dead letters (``id``, repeatable) back as ready messages."""
    return _act(ops.requeue_dead_letters, "requeued", "dead letter")


def _act(action, verb: str, noun: str):
    ids = request.form.getlist("id")
    try:
        if not ids:
            raise ValueError(f"no {noun} id given")
        done = action(current_app.extensions["nexus_engine"], ids, strict=True)
    except (ValueError, ops.NotFound) as exc:
        if g.admin_via == "bearer":
            status = 404 if isinstance(exc, ops.NotFound) else 400
            return jsonify(error=str(exc), details=None), status
        flash(str(exc), "error")
        return redirect(url_for("admin.dashboard"), 303)
    if g.admin_via == "bearer":
        return jsonify({verb: done}), 200
    flash(f"{verb.capitalize()} {done} {noun}{'' if done == 1 else 's'}.", "info")
    return redirect(url_for("admin.dashboard"), 303)


# -- the chart --------------------------------------------------------------------------------


def chart(minutes: list[dict]) -> dict:
    """Polylines (SVG ``points``) of accepted / completed / failed per minute, on one scale
    whose top is the busiest minute (at least 1)."""
    n = max(len(minutes), 2)
    top = max([1] + [m[s] for m in minutes for s in SERIES])
    inner_w = CHART_WIDTH - 2 * CHART_PAD
    inner_h = CHART_HEIGHT - 2 * CHART_PAD

    def xy(i: int, value: int) -> str:
        x = CHART_PAD + inner_w * i / (n - 1)
        y = CHART_PAD + inner_h * (1 - value / top)
        return f"{x:.1f},{y:.1f}"

    series = [
        {
            "name": s,
            "points": " ".join(xy(i, m[s]) for i, m in enumerate(minutes)),
            "total": sum(m[s] for m in minutes),
            "last": minutes[-1][s] if minutes else 0,
        }
        for s in SERIES
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "pad": CHART_PAD,
        "top": top,
        "top_y": CHART_PAD,
        "base_y": CHART_HEIGHT - CHART_PAD,
        "right_x": CHART_WIDTH - CHART_PAD,
        "series": series,
        "first": minutes[0]["minute"] if minutes else None,
        "last": minutes[-1]["minute"] if minutes else None,
    }
