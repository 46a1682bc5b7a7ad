"""The clients of ``make chaos``: widget-like threads POSTing to the web process on 127.0.0.1.

Each client owns its sessions and sends one request at a time: new conversations, longer
resends (the whole chat, everything sent before included, as the widget does), strict-prefix
and identical resends of the latest accepted version (which must be answered duplicate), and
hostile bodies.  Every 202 ``accepted`` answer is recorded in the :class:`~chaos_verdict.Ledger`;
a 503, a 4xx or a connection error is a rejection, not a loss.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from chaos_verdict import Ledger

HTTP_TIMEOUT_S = 15.0
MAX_BODY_BYTES = 1024 * 1024  #: the web's limit
PAUSE_S = (0.05, 0.2)  #: pause between one client's requests (seconds, uniform)
USER_LINES = (
    "Hola, me llamo {name}",
    "Quiero saber sobre las oportunidades de inversión",
    "Trabajo en una empresa de logística",
    "¿Cuánto cuesta empezar?",
    "No tengo mucho tiempo, la verdad",
    "Mi teléfono es +34 612 345 678",
    "Soy estudiante y busco ingresos extra",
    "No me interesa, gracias",
)
ASSISTANT_LINES = ("¡Hola! ¿En qué puedo ayudarte?", "Claro, te cuento.", "¿Algo más?")
NAMES = ("Juan Pérez", "Ana Gómez", "Luis Martín", "Marta Ruiz")


def request(port, method, path, body=b"", content_type="application/json", timeout=None):
    """``(status, parsed JSON or None)``; status 0 on a connection error or timeout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or HTTP_TIMEOUT_S)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, None


def post_json(port: int, body: dict) -> tuple[int, dict | None]:
    return request(port, "POST", "/api/nexus/producer", json.dumps(body).encode())


@dataclass
class Session:
    id: str
    fingerprint: str | None
    messages: list[dict] = field(default_factory=list)  #: the latest version sent
    accepted: list[dict] | None = None  #: the latest version answered 202


#: Hostile bodies: kind -> must it be accepted (True), refused (False), or either (None).
HOSTILE = {
    "malformed_json": False,
    "not_json_content_type": False,
    "over_1mib": False,
    "deep_nesting": False,
    "wrong_types": False,
    "wrong_role": False,
    "too_many_messages": False,
    "lone_surrogates": None,
    "nul_char": None,
    "long_message_100k": True,
    "near_1mib": True,
}


def hostile_body(kind: str, session: str) -> tuple[bytes, str]:
    """``(body, content type)`` of one hostile request (built only when sent: some are 1 MiB)."""
    ok = {"role": "user", "content": "hola"}
    big = MAX_BODY_BYTES - 300

    def body(messages, **extra) -> bytes:
        return json.dumps({"messages": messages, "sessionId": session, **extra}).encode()

    if kind == "malformed_json":
        return b'{"messages": [{"role": "user", "content": "ho', "application/json"
    if kind == "not_json_content_type":
        return b"messages=hola", "text/plain"
    if kind == "over_1mib":
        return body([{"role": "user", "content": "x" * (big + 400)}]), "application/json"
    if kind == "deep_nesting":
        nested = "[" * 200 + "1" + "]" * 200
        text = body([ok]).decode()[:-1] + f', "metadata": {{"a": {nested}}}}}'
        return text.encode(), "application/json"
    if kind == "wrong_types":
        return json.dumps({"messages": "hola", "sessionId": 7}).encode(), "application/json"
    if kind == "wrong_role":
        return body([{"role": "system", "content": "x"}]), "application/json"
    if kind == "too_many_messages":
        return body([ok] * 201), "application/json"
    if kind == "lone_surrogates":  # escaped in the JSON text, as a buggy client would send
        text = body([{"role": "user", "content": "hola SURR adiSURRos"}]).decode()
        return text.replace("SURR", "\\ud800", 1).replace("SURR", "\\udfff").encode(), (
            "application/json"
        )
    if kind == "nul_char":
        text = body([{"role": "user", "content": "aNULb"}]).decode()
        return text.replace("NUL", "\\u0000").encode(), "application/json"
    if kind == "long_message_100k":
        return body([ok, {"role": "user", "content": "a" * 100_000}]), "application/json"
    if kind == "near_1mib":
        return body([{"role": "user", "content": "b" * big}]), "application/json"
    raise ValueError(kind)


class Client(threading.Thread):
    """One widget-like client: its own sessions, sent one request at a time."""

    def __init__(self, index: int, port: int, ledger: Ledger, until: float, seed: int):
        super().__init__(name=f"client{index}", daemon=True)
        self.index, self.port, self.ledger, self.until = index, port, ledger, until
        self.rng = random.Random(seed)
        self.sessions: list[Session] = []
        self.run_id = uuid.uuid4().hex[:6]

    def run(self) -> None:
        actions = ("new", "longer", "prefix", "identical", "hostile")
        weights = (25, 35, 12, 12, 16)
        while time.monotonic() < self.until:
            action = self.rng.choices(actions, weights)[0]
            getattr(self, action)()
            time.sleep(self.rng.uniform(*PAUSE_S))  # pacing, not synchronisation

    def _user_line(self) -> str:
        return self.rng.choice(USER_LINES).format(name=self.rng.choice(NAMES))

    def _send(self, session: Session, messages: list[dict], what: str) -> dict | None:
        body = {"messages": messages, "sessionId": session.id}
        if session.fingerprint:
            body["fingerprint"] = session.fingerprint
        started = time.monotonic()
        status, reply = post_json(self.port, body)
        self.ledger.answer(what, status, time.monotonic() - started)
        if status == 202 and reply and reply.get("status") == "accepted":
            self.ledger.accepted(session.id, messages, reply, fingerprint=session.fingerprint)
            if session.accepted is None or len(messages) >= len(session.accepted):
                session.accepted = list(messages)
            return reply
        if status == 202:
            self.ledger.anomaly("202 without status accepted")
        return None

    def new(self) -> None:
        n = len(self.sessions)
        fingerprint = self.rng.choice((None, *(f"fp-chaos-{i}" for i in range(40))))
        session = Session(f"chaos-{self.run_id}-{self.index}-{n}", fingerprint)
        session.messages = [{"role": "user", "content": self._user_line()}]
        self.sessions.append(session)
        self._send(session, session.messages, "new")

    def _pick(self, accepted_min: int = 0) -> Session | None:
        pool = [s for s in self.sessions[-50:] if len(s.accepted or ()) >= accepted_min]
        return self.rng.choice(pool) if pool else None

    def longer(self) -> None:
        session = self._pick()
        if session is None or len(session.messages) > 190:
            return self.new()
        # The widget resends the whole chat: everything sent before, answered or not.
        session.messages = session.messages + [
            {"role": "assistant", "content": self.rng.choice(ASSISTANT_LINES)},
            {"role": "user", "content": self._user_line()},
        ]
        self._send(session, session.messages, "longer")

    def prefix(self) -> None:
        session = self._pick(accepted_min=2)
        if session is None:
            return self.new()
        cut = self.rng.randrange(1, len(session.accepted))
        reply = self._send(session, session.accepted[:cut], "prefix")
        if reply is not None and reply.get("duplicate") is not True:
            self.ledger.anomaly("strict-prefix resend not answered duplicate")

    def identical(self) -> None:
        session = self._pick(accepted_min=1)
        if session is None:
            return self.new()
        reply = self._send(session, session.accepted, "identical")
        if reply is not None and reply.get("duplicate") is not True:
            self.ledger.anomaly("identical resend not answered duplicate")

    def hostile(self) -> None:
        sid = f"hostile-{self.run_id}-{self.index}-{len(self.sessions)}-{self.rng.random():.6f}"
        kind = self.rng.choice(list(HOSTILE))
        valid = HOSTILE[kind]
        body, ctype = hostile_body(kind, sid)
        started = time.monotonic()
        status, reply = request(self.port, "POST", "/api/nexus/producer", body, ctype)
        self.ledger.answer(f"hostile {kind}", status, time.monotonic() - started)
        if status == 202 and reply and reply.get("status") == "accepted":
            if valid is False:
                self.ledger.anomaly(f"hostile {kind} accepted")
            sent = json.loads(body)["messages"]
            self.ledger.accepted(sid, sent, reply, exact=valid is True)
        elif valid is True and status not in (0, 503):
            self.ledger.anomaly(f"valid {kind} refused with {status}")
        elif 200 <= status < 300:
            self.ledger.anomaly(f"hostile {kind} answered {status}")
