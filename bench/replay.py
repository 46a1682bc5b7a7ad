"""``make bench-replay``: paid Claude calls per conversation, before and after the debounce.

Replays realistic widget chats through the real pipeline -- a ``dramatiq`` worker process, the
PostgreSQL broker, the Claude extractor through the real anthropic SDK -- against a local stub
of the Messages API that counts the calls (each one would be paid).  A chat has 5-15 visitor
turns 5-30 s apart, the assistant answering 1-3 s after each; the widget resends the whole chat
after every visitor message AND after every assistant reply, as it does in production.

Time is compressed by ``--scale`` (default 0.1: a 30 s gap takes 3 s), the debounce and the
stub's answer time (``--api-latency``, 1.5 s of API time) with it, so every figure below is in
simulated seconds (wall time / scale: fixed overheads are magnified, which is conservative).

Two runs on the same chats, each on a fresh database:

* **before**: ``NEXUS_DEBOUNCE_MS=0`` and no assistant-only skip (``bench/replay_before.py``);
* **after**: the defaults with Claude (``NEXUS_DEBOUNCE_MS`` = 30 s, scaled).

For each: paid calls per conversation (mean, max), the delay from the POST of the turn that
gives a phone number to that number being in ``prospect_data`` (p50, max), and whether the
final prospect equals the one from extracting the last version alone.  The stub answers
each request as the rules extractor reads the same conversation, so answers are
deterministic.  Prints a table, writes ``bench/results/replay.json``.  Not a test: nothing is
asserted; targets (<= 2 calls per conversation, phone delay <= 5 s) are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus import (  # noqa: E402
    config,
    db,
    debounce,  # noqa: E402
)
from nexus.embedded import database  # noqa: E402
from nexus.extraction.rules import RulesExtractor  # noqa: E402
from nexus.smoke import throwaway_database  # noqa: E402
from tests.claude_stub import answer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "replay.json"
TARGET_CALLS = 2.0  #: paid calls per conversation, at most
TARGET_PHONE_DELAY_S = 5.0  #: simulated seconds, at most
#: The fields the extractor is asked for (momento_optimo is derived from nivel_interes).
ANSWER_FIELDS = (
    "nombre",
    "email",
    "telefono",
    "ocupacion",
    "nivel_interes",
    "objeciones",
    "rechazo",
    "arquetipo",
)
PROSPECT_FIELDS = (
    "nombre",
    "email",
    "telefono",
    "ocupacion",
    "nivel_interes",
    "objeciones",
    "arquetipo",
    "momento_optimo",
)

# -- the chats ----------------------------------------------------------------------------------

GREETINGS = ["hola", "buenas tardes", "buenas noches", "buen día", "holaa", "buenas"]
CONTEXTS = [
    "vi su anuncio en instagram",
    "me pasaron este link",
    "una consulta",
    "vi el video en facebook",
    "me habló una amiga de esto",
    "quería información",
]
QUESTIONS = [
    "de qué se trata exactamente",
    "y cómo funciona",
    "hay que vender productos?",
    "cuánto se gana más o menos",
    "es legal esto?",
    "cuánto cuesta entrar?",
    "tengo poco tiempo libre la verdad",
    "ok",
    "ya veo",
    "suena bien",
    "y los pagos cómo son",
    "hay capacitación?",
    "se puede hacer desde el celular?",
    "entiendo",
    "y eso es todos los meses?",
]
NAMES = [
    "Ana Ruiz",
    "Carlos Méndez",
    "Lucía Torres",
    "Jorge Salinas",
    "Marta Gómez",
    "Pedro Aguilar",
    "Sofía Herrera",
    "Diego Castro",
    "Valentina Ríos",
    "Andrés Molina",
]
NAME_TURNS = ["me llamo {}", "soy {}", "mi nombre es {}"]
JOBS = [
    "trabajo como contadora en una empresa",
    "tengo una tienda de ropa",
    "estudio ingeniería en la universidad",
    "me dedico al hogar y a mis hijos",
    "trabajo por mi cuenta como diseñador",
]
INTENTS = ["quiero empezar", "me interesa unirme", "me gustaría empezar cuanto antes"]
PHONE_TURNS = ["mi número es {}", "mi whatsapp es {}", "pueden escribirme al {}"]
REJECTIONS = ["la verdad no me interesa, gracias"]
CLOSINGS = ["gracias", "perfecto, gracias", "ok, quedo atento", "muchas gracias, hasta luego"]
#: Assistant replies, none repeated within a chat (the stub tells versions apart by them).
REPLIES = [
    "¡Claro! Te cuento cómo funciona.",
    "Buena pregunta: depende de cuánto tiempo le dediques.",
    "Sí, es un negocio legal y registrado.",
    "Tenemos capacitación gratuita cada semana.",
    "¿Me dices tu nombre para atenderte mejor?",
    "¿Te gustaría que un asesor te llame?",
    "Perfecto, tomo nota.",
    "¡Gracias por escribirnos!",
    "Se trabaja desde el celular, a tu ritmo.",
    "Las ganancias dependen de tus ventas y de tu equipo.",
    "Los pagos se hacen cada mes por transferencia.",
    "La inscripción incluye un kit de inicio.",
    "Te acompaña un mentor las primeras semanas.",
    "Hay personas que empiezan con dos horas al día.",
    "¿Tienes alguna otra duda?",
    "Con gusto te ayudo.",
]
#: How often a visitor gives each thing (website chats: many never leave a contact).
P_NAME, P_JOB, P_INTENT, P_PHONE, P_EMAIL, P_REJECTION = 0.6, 0.4, 0.5, 0.35, 0.15, 0.1


def make_chat(rng: random.Random, i: int) -> list[tuple[str, float, float]]:
    """Visitor turns as (text, seconds since the previous visitor turn, seconds until the
    assistant's reply): 5-15 turns, 5-30 s apart, replies 1-3 s later."""
    name = rng.choice(NAMES)
    first = unicodedata.normalize("NFKD", name.split()[0].lower()).encode("ascii", "ignore")
    first = first.decode()
    special = []
    if rng.random() < P_NAME:
        special.append(rng.choice(NAME_TURNS).format(name))
    if rng.random() < P_JOB:
        special.append(rng.choice(JOBS))
    if rng.random() < P_REJECTION:
        special.append(rng.choice(REJECTIONS))
    else:
        if rng.random() < P_INTENT:
            special.append(rng.choice(INTENTS))
        if rng.random() < P_PHONE:
            special.append(rng.choice(PHONE_TURNS).format(f"3{rng.randint(10, 99)} 555 {i:04d}"))
        if rng.random() < P_EMAIL:
            special.append(f"mi correo es {first}{i}@correo.com")
    total = rng.randint(5, 15)
    middle = max(0, total - 2 - len(special))
    body = rng.sample(QUESTIONS, min(middle, len(QUESTIONS))) + special
    rng.shuffle(body)
    opener = f"{GREETINGS[i % len(GREETINGS)]}, {CONTEXTS[(i // len(GREETINGS)) % len(CONTEXTS)]}"
    texts = [opener, *body, rng.choice(CLOSINGS)]
    return [(t, rng.uniform(5, 30), rng.uniform(1, 3)) for t in texts]


def versions(chat: list[tuple[str, float, float]], rng: random.Random) -> list[list[dict]]:
    """Every version the widget sends: after each visitor message and each reply."""
    out, messages = [], []
    for (text, _, _), reply in zip(chat, rng.sample(REPLIES, len(chat)), strict=True):
        messages = messages + [{"role": "user", "content": text}]
        out.append(messages)
        messages = messages + [{"role": "assistant", "content": reply}]
        out.append(messages)
    return out


# -- the stub of the Messages API -----------------------------------------------------------------


class Stub:
    """Answers each request as the rules extractor reads the conversation it names, after
    ``latency`` seconds; counts the requests per chat."""

    def __init__(self, chats: list[list[list[dict]]], latency: float):
        self.latency = latency
        self.lock = threading.Lock()
        self.calls: dict[int, float] = {}
        #: (chat, version index) of each answered call, to tell urgent calls from quiet ones.
        self.answered: list[tuple[int, int]] = []
        self.total = 0
        rules = RulesExtractor()
        self.known = [
            [(v, {k: rules.extract(v).prospect.to_dict()[k] for k in ANSWER_FIELDS}) for v in chat]
            for chat in chats
        ]
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = json.dumps(stub.handle(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.calls, self.answered, self.total = {}, [], 0

    def handle(self, body: dict) -> dict:
        text = json.dumps(body.get("messages"), ensure_ascii=False)
        text += "".join(
            str(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)
        )
        best, found = 0, []
        for c, chat in enumerate(self.known):
            for n, (messages, result) in enumerate(chat):
                if not all(self._contains(text, m["content"]) for m in messages):
                    break
                size = n + 1
                if size > best:
                    best, found = size, [(c, result)]
                elif size == best:
                    found.append((c, result))
        if found:
            with self.lock:
                self.answered.append((found[0][0], best - 1))
        time.sleep(self.latency)
        with self.lock:
            self.total += 1
            for c, _ in found:  # identical prefixes of several chats: shared
                self.calls[c] = self.calls.get(c, 0) + 1 / len(found)
        result = found[0][1] if found else {k: None for k in ANSWER_FIELDS}
        return answer(result)

    @staticmethod
    def _contains(text: str, content: str) -> bool:
        return content in text or json.dumps(content, ensure_ascii=False)[1:-1] in text

    def close(self) -> None:
        self.server.shutdown()


# -- one run ------------------------------------------------------------------------------------


def is_urgent(stub: Stub, chat: int, index: int) -> bool:
    """Whether version ``index`` of ``chat`` is due at once (see nexus/debounce.py)."""
    versions_ = stub.known[chat]
    previous = debounce.signals(versions_[index - 1][1]) if index else None
    return debounce.urgent(debounce.signals(versions_[index][1]), previous)


def start_worker(url: str, module: str, debounce_ms: int, stub: Stub, log: Path):
    env = {k: v for k, v in os.environ.items() if k not in config.VARIABLES}
    env.update(
        DATABASE_URL=url,
        PYTHONPATH=str(ROOT),
        ANTHROPIC_API_KEY="bench-replay",
        ANTHROPIC_BASE_URL=stub.url,
        NEXUS_DEBOUNCE_MS=str(debounce_ms),
        NEXUS_MIN_BACKOFF_MS="50",
        NEXUS_MAX_BACKOFF_MS="500",
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    out = open(log, "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", module, "--processes", "1", "--threads", "8"],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    return proc


def wait(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def run(
    name: str,
    module: str,
    debounce_ms: int,
    server_url: str,
    chats,
    sent,
    stub: Stub,
    scale: float,
) -> dict:
    stub.reset()
    with throwaway_database(server_url, f"nexus_bench_replay_{name}") as url:
        conn = psycopg2.connect(db.libpq_url(url))
        conn.autocommit = True
        cur = conn.cursor()
        log = ROOT / ".pgdata" / f"bench-replay-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        worker = start_worker(url, module, debounce_ms, stub, log)
        engine = db.make_engine(url, pool_size=8, max_overflow=8)
        try:

            def worker_ready():
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited; see {log}")
                cur.execute("SELECT count(*) FROM broker_workers")
                return cur.fetchone()[0] > 0

            wait(worker_ready, "the worker", 60)
            run_id = uuid.uuid4().hex[:6]
            phone_posted: dict[int, float] = {}
            phone_seen: dict[int, float] = {}
            lock = threading.Lock()

            def drive(c: int) -> None:
                rng = random.Random(c)
                time.sleep(rng.uniform(0, 10) * scale)  # chats start at different times
                texts = chats[c]
                for turn, (_text, gap, reply_in) in enumerate(texts):
                    if turn:
                        time.sleep(max(0.0, gap - texts[turn - 1][2]) * scale)
                    msgs = sent[c][2 * turn]
                    db.enqueue(engine, msgs, f"{run_id}-{c}", f"fp-{run_id}-{c}", {})
                    if c not in phone_posted and stub.known[c][2 * turn][1]["telefono"]:
                        with lock:
                            phone_posted[c] = time.monotonic()
                    time.sleep(reply_in * scale)
                    db.enqueue(
                        engine, sent[c][2 * turn + 1], f"{run_id}-{c}", f"fp-{run_id}-{c}", {}
                    )

            threads = [threading.Thread(target=drive, args=(c,)) for c in range(len(chats))]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                with lock:
                    waiting = [c for c in phone_posted if c not in phone_seen]
                for c in waiting:
                    cur.execute(
                        "SELECT telefono FROM prospect_data WHERE fingerprint_id = %s",
                        (f"fp-{run_id}-{c}",),
                    )
                    row = cur.fetchone()
                    if row and row[0]:
                        phone_seen[c] = time.monotonic()
                time.sleep(0.01)
            for t in threads:
                t.join()

            def drained():
                cur.execute(
                    "SELECT count(*) FROM nexus_queue WHERE status <> 'completed'"
                    " UNION ALL SELECT count(*) FROM broker_messages"
                )
                return all(n == 0 for (n,) in cur.fetchall())

            wait(drained, "every chat to complete", 120 + 3 * debounce_ms / 1000)
            for c in phone_posted:
                if c not in phone_seen:
                    phone_seen[c] = time.monotonic()  # seen by now at the latest
            cur.execute("SELECT count(*) FROM broker_dead_letters")
            dead = cur.fetchone()[0]
            equal, differences = 0, []
            for c in range(len(chats)):
                cur.execute(
                    "SELECT nombre, email, telefono, ocupacion, nivel_interes, objeciones,"
                    " arquetipo, momento_optimo FROM prospect_data WHERE fingerprint_id = %s",
                    (f"fp-{run_id}-{c}",),
                )
                row = cur.fetchone()
                expected = RulesExtractor().extract(sent[c][-1]).prospect.to_dict()
                got = dict(zip(PROSPECT_FIELDS, row, strict=True)) if row else {}
                if got:
                    got["nivel_interes"] = float(got["nivel_interes"])
                if all(got.get(k) == expected[k] for k in PROSPECT_FIELDS):
                    equal += 1
                else:
                    differences.append({"chat": c, "expected": expected, "got": got})
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            engine.dispose()
            conn.close()

    per_chat = [stub.calls.get(c, 0.0) for c in range(len(chats))]
    urgent_calls = sum(is_urgent(stub, c, n) for c, n in stub.answered)
    delays = [(phone_seen[c] - phone_posted[c]) / scale for c in phone_posted]
    walls = [(phone_seen[c] - phone_posted[c]) * 1000 for c in phone_posted]
    return {
        "debounce_ms_simulated": round(debounce_ms / scale),
        "assistant_only_skip": module == "workers",
        "paid_calls": stub.total,
        # Calls for versions in which the rules found something new that sales acts on
        # (due at once by design); the rest are extractions once the chat went quiet.
        "urgent_calls": urgent_calls,
        "calls_per_conversation": {
            "mean": round(stub.total / len(chats), 2),
            "max": round(max(per_chat), 2),
        },
        "phone_delay_s": {
            "chats_with_phone": len(delays),
            "p50": round(statistics.median(delays), 2) if delays else None,
            "max": round(max(delays), 2) if delays else None,
            "wall_ms": [round(w) for w in walls],
        },
        "final_prospect_equals_last_version": f"{equal}/{len(chats)}",
        "differences": differences[:5],
        "dead_letters": dead,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=40, help="conversations per run")
    parser.add_argument("--scale", type=float, default=0.1, help="wall seconds per simulated s")
    parser.add_argument("--api-latency", type=float, default=1.5, help="simulated s per call")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    chats = [make_chat(rng, i) for i in range(args.chats)]
    sent = [versions(chat, random.Random(args.seed + i)) for i, chat in enumerate(chats)]
    debounce_ms = round(config.DEFAULT_DEBOUNCE_MS["claude"] * args.scale)
    stub = Stub(sent, args.api_latency * args.scale)
    settings = config.load({k: v for k, v in os.environ.items() if k == "DATABASE_URL"})
    try:
        with database(settings, "bench") as server_url:
            before = run(
                "before", "bench.replay_before", 0, server_url, chats, sent, stub, args.scale
            )
            after = run("after", "workers", debounce_ms, server_url, chats, sent, stub, args.scale)
    finally:
        stub.close()

    turns = [len(c) for c in chats]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "chats": args.chats,
        "visitor_turns": {
            "mean": round(statistics.fmean(turns), 1),
            "min": min(turns),
            "max": max(turns),
        },  # fmt: skip
        "versions_per_chat": round(2 * statistics.fmean(turns), 1),
        "scale": args.scale,
        "api_latency_s": args.api_latency,
        "before": before,
        "after": after,
        "calls_ratio_before_over_after": round(
            before["paid_calls"] / max(1, after["paid_calls"]), 1
        ),
        "targets": {"calls_per_conversation": TARGET_CALLS, "phone_delay_s": TARGET_PHONE_DELAY_S},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")

    def verdict(value, target):
        return "" if value is None else ("met" if value <= target else "MISSED")

    print(
        f"{args.chats} chats, {result['visitor_turns']['mean']} visitor turns on average "
        f"({result['versions_per_chat']} versions sent), time x{args.scale}"
    )
    print(f"{'':36}{'before':>10}{'after':>10}  target")
    rows = [
        ("paid calls per conversation (mean)", "calls_per_conversation", "mean", TARGET_CALLS),
        ("paid calls per conversation (max)", "calls_per_conversation", "max", None),
        ("  of which urgent (all chats)", None, "urgent_calls", None),
        ("phone -> prospect_data p50 (s)", "phone_delay_s", "p50", TARGET_PHONE_DELAY_S),
        ("phone -> prospect_data max (s)", "phone_delay_s", "max", TARGET_PHONE_DELAY_S),
    ]
    for label, group, key, target in rows:
        if group is None:
            b, a = before[key], after[key]
        else:
            b, a = before[group][key], after[group][key]
        cells = "".join(f"{'-' if v is None else v:>10}" for v in (b, a))
        goal = "" if target is None else f"<= {target:g}  {verdict(a, target)}"
        print(f"{label:<36}{cells}  {goal}")
    print(
        f"{'final prospect = last version alone':<36}"
        f"{before['final_prospect_equals_last_version']:>10}"
        f"{after['final_prospect_equals_last_version']:>10}"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
