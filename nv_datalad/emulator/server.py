"""The emulator's HTTP side: NeuroVault's API, its media files and the Neurosynth decoder on one
loopback port, with knobs for faults, latency and bandwidth, request counters and a control
endpoint.

``Emulator`` is what tests and ``server: embedded`` use; ``serve_forever`` is what the
``nv-datalad emulator`` command runs. Every request is routed to a pure function that returns a
``Reply``; faults and throttling are applied on the way out, so the routing stays readable.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .corpus import CORPORA, Corpus, Record, public_record
from .neurosynth import HTML_ERROR_PAGE, DecodeOutcome, decode

logger = logging.getLogger(__name__)

DEFAULT_PORT = 38591
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

NOT_FOUND = {"detail": "Not found."}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
COUNTER_KINDS = (
    "collections_list", "collection", "collection_images", "images_list", "image",
    "file_get", "file_head", "decode", "redirect", "control",
)  # fmt: skip

_HTML_404 = b"<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"


# --------------------------------------------------------------------------------------------
# Replies and knobs


@dataclass
class Reply:
    """One response, before faults and throttling."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    kind: str | None = None  # counter kind
    image_id: int | None = None  # set on a full image-file body, to count downloads

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"


def json_reply(status: int, payload: Any, kind: str | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), kind=kind)


def html_reply(status: int, body: bytes | str, kind: str | None = None) -> Reply:
    data = body.encode() if isinstance(body, str) else body
    return Reply(status, data, "text/html; charset=utf-8", kind=kind)


@dataclass(frozen=True)
class Faults:
    """Failure injection. Each rate is a probability per request, drawn from a seeded RNG."""

    error_rate: float = 0.0
    truncate_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 30.0
    malformed_json_rate: float = 0.0
    paths: tuple[str, ...] | None = None  # path prefixes the faults apply to; None: all

    def __post_init__(self) -> None:
        for name in ("error_rate", "truncate_rate", "stall_rate", "malformed_json_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.stall_seconds < 0:
            raise ValueError(f"stall_seconds must be >= 0, got {self.stall_seconds!r}")

    def applies_to(self, path: str) -> bool:
        return self.paths is None or any(path.startswith(p) for p in self.paths)


@dataclass(frozen=True)
class Network:
    """Simulated network: ``latency`` seconds before each reply, ``bandwidth`` bytes/s per body."""

    latency: float = 0.0
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {self.latency!r}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s or None, got {self.bandwidth!r}")


@dataclass(frozen=True)
class FaultDecision:
    stall: bool = False
    error_status: int | None = None
    malformed: bool = False
    truncate: bool = False


# --------------------------------------------------------------------------------------------
# Pure helpers


def _positive_int(text: str | None, *, strict: bool, cutoff: int | None = None) -> int | None:
    """Django REST framework's rule for limit/offset: None when absent or invalid."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value < 0 or (strict and value == 0):
        return None
    return min(value, cutoff) if cutoff is not None else value


def paginate(records: Sequence[Record], query: dict[str, str], page_url: str) -> dict[str, Any]:
    """A limit/offset page as DRF renders it: ``count``, absolute ``next``/``previous``,
    ``results``.

    ``page_url`` is the absolute URL of the list without query string; other query parameters
    (ignored filters included) are kept in the links, sorted, like DRF's ``replace_query_param``.
    """
    limit = _positive_int(query.get("limit"), strict=True, cutoff=MAX_LIMIT) or DEFAULT_LIMIT
    offset = _positive_int(query.get("offset"), strict=False) or 0
    count = len(records)

    def link(new_offset: int | None) -> str:
        params = {k: v for k, v in query.items() if k not in ("limit", "offset")}
        params["limit"] = str(limit)
        if new_offset is not None:
            params["offset"] = str(new_offset)
        return f"{page_url}?{urlencode(sorted(params.items()))}"

    next_url = None if offset + limit >= count else link(offset + limit)
    if offset <= 0:
        previous_url = None
    else:
        previous_url = link(None) if offset - limit <= 0 else link(offset - limit)
    return {
        "count": count,
        "next": next_url,
        "previous": previous_url,
        "results": [public_record(r) for r in records[offset : offset + limit]],
    }


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A single ``bytes=a-b`` range: (first, last), None without a usable header, "bad" if
    unsatisfiable. Resuming downloaders (git-annex, curl -C) send these."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, _, last_text = header[6:].strip().partition("-")
    try:
        if first_text == "":
            length = int(last_text)
            first, last = max(0, size - length), size - 1
        else:
            first = int(first_text)
            last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return "bad"
    return first, min(last, size - 1)


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------------------------
# The HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        self.server.emulator._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.emulator._handle(self, "HEAD")

    def do_POST(self) -> None:
        self.server.emulator._handle(self, "POST")


class Emulator:
    """A NeuroVault look-alike on a loopback port. See the module and NEUROVAULT_API.md.

    The socket is bound at construction (``port=0`` picks a free port), so ``url`` and the
    records' absolute URLs are known before ``start``. Use as a context manager.
    """

    def __init__(
        self,
        corpus: str = "demo",
        host: str = "127.0.0.1",
        port: int = 0,
        n_images: int | None = None,
        seed: int = 0,
    ) -> None:
        if corpus not in CORPORA:
            raise ValueError(f"unknown corpus {corpus!r}: expected one of {', '.join(CORPORA)}")
        if n_images is not None and n_images < 0:
            raise ValueError(f"n_images must be >= 0, got {n_images!r}")
        self.corpus_name = corpus
        self.seed = seed
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._counters: Counter[str] = Counter()
        self._downloads: Counter[int] = Counter()
        self._faults = Faults()
        self._network = Network()
        self._fault_rng = random.Random(seed)
        self._server = _Server((host, port), self)
        try:
            bound_port = self._server.server_address[1]
            self.url = f"http://{_url_host(host)}:{bound_port}"
            self._corpus = Corpus(corpus, self.url, seed=seed, n_images=n_images)
        except BaseException:
            self._server.server_close()
            raise

    # ---- lifecycle

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Emulator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.25},
                name=f"nv-emulator-{self.port}",
                daemon=True,
            )
            self._thread.start()
            logger.debug("emulator (%s corpus) serving at %s", self.corpus_name, self.url)
        return self

    def stop(self) -> None:
        """Stop serving; stalls and throttled bodies in flight end at once."""
        self._closing.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        with self._server.sockets_lock:
            open_sockets = list(self._server.open_sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state, read

    @property
    def collections(self) -> dict[int, Record]:
        """Every collection's current record (private ones included), as copies."""
        with self._lock:
            return {cid: public_record(c.record) for cid, c in self._corpus.collections.items()}

    @property
    def images(self) -> dict[int, Record]:
        """Every live image's current record (private collections included), as copies."""
        with self._lock:
            return {iid: public_record(im.record) for iid, im in self._corpus.images.items()}

    def image_bytes(self, image_id: int) -> bytes:
        with self._lock:
            return self._corpus.file_bytes(int(image_id))

    @property
    def counters(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counters)

    @property
    def downloads(self) -> Counter[int]:
        with self._lock:
            return Counter(self._downloads)

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()
            self._downloads.clear()

    # ---- state, write

    def mutate_content(self, image_id: int) -> None:
        with self._lock:
            self._corpus.mutate_content(int(image_id))

    def mutate_metadata(self, image_id: int, **fields: Any) -> None:
        with self._lock:
            self._corpus.mutate_metadata(int(image_id), **fields)

    def delete_image(self, image_id: int) -> None:
        with self._lock:
            self._corpus.delete_image(int(image_id))

    def add_collection(self, n_images: int = 3, **fields: Any) -> int:
        with self._lock:
            return self._corpus.add_collection(int(n_images), **fields)

    def set_faults(
        self,
        error_rate: float = 0.0,
        truncate_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 30.0,
        malformed_json_rate: float = 0.0,
        paths: str | Sequence[str] | None = None,
    ) -> None:
        """Replace the fault settings (all zero: no faults) and re-seed the fault RNG, so the
        same settings and request sequence fail the same requests."""
        prefixes = (paths,) if isinstance(paths, str) else (tuple(paths) if paths else None)
        faults = Faults(
            float(error_rate), float(truncate_rate), float(stall_rate), float(stall_seconds),
            float(malformed_json_rate), prefixes,
        )  # fmt: skip
        with self._lock:
            self._faults = faults
            self._fault_rng = random.Random(self.seed)

    def set_network(self, latency: float = 0.0, bandwidth: float | None = None) -> None:
        network = Network(float(latency), None if bandwidth is None else float(bandwidth))
        with self._lock:
            self._network = network

    # ---- request handling

    def _handle(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            if path.startswith("/_control/"):
                reply = self._control(handler, method, path)
                self._send(handler, method, reply, FaultDecision())
                return
            with self._lock:
                network, faults = self._network, self._faults
            if network.latency and self._closing.wait(network.latency):
                handler.close_connection = True
                return
            if method == "POST":
                handler.close_connection = True  # the unread request body poisons keep-alive
                reply, decision = html_reply(405, "<h1>Method Not Allowed</h1>"), FaultDecision()
            else:
                with self._lock:
                    reply = self._route(method, path, split.query, query, handler)
                    if reply.kind:
                        self._counters[reply.kind] += 1
                    decision = self._decide_faults(faults, path, reply)
            if decision.stall and self._closing.wait(faults.stall_seconds):
                handler.close_connection = True
                return
            self._send(handler, method, reply, decision, network)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            logger.debug("client went away during %s %s: %s", method, path, exc)
            handler.close_connection = True

    def _decide_faults(self, faults: Faults, path: str, reply: Reply) -> FaultDecision:
        if not faults.applies_to(path):
            return FaultDecision()
        rng = self._fault_rng
        stall = rng.random() < faults.stall_rate
        if rng.random() < faults.error_rate:
            return FaultDecision(stall=stall, error_status=rng.choice((500, 502, 503)))
        malformed = (
            reply.is_json and reply.status == 200 and rng.random() < faults.malformed_json_rate
        )
        truncate = not malformed and rng.random() < faults.truncate_rate
        return FaultDecision(stall=stall, malformed=malformed, truncate=truncate)

    def _send(
        self,
        handler: _Handler,
        method: str,
        reply: Reply,
        decision: FaultDecision,
        network: Network | None = None,
    ) -> None:
        if decision.error_status is not None:
            status = decision.error_status
            reply = html_reply(status, f"<h1>Server Error ({status})</h1>")
        body = reply.body
        if decision.malformed:
            body = body[: len(body) // 2]
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.status != 304:
            handler.send_header("Content-Length", str(len(body)))
        truncate = decision.truncate and method != "HEAD" and len(body) > 1
        if truncate:
            handler.close_connection = True  # the connection drops mid-body, unannounced
        handler.end_headers()
        if method == "HEAD" or reply.status == 304:
            handler.wfile.flush()
            return
        payload = body[: len(body) // 2] if truncate else body
        if not self._write(handler, payload, network):
            handler.close_connection = True
            return
        handler.wfile.flush()
        if reply.image_id is not None and not truncate:
            with self._lock:
                self._downloads[reply.image_id] += 1

    def _write(self, handler: _Handler, payload: bytes, network: Network | None) -> bool:
        """Write a body, throttled to the bandwidth in chunks with sleeps; False if the server
        shut down meanwhile."""
        bandwidth = network.bandwidth if network else None
        if not bandwidth:
            handler.wfile.write(payload)
            return True
        chunk = max(512, int(bandwidth / 20))
        for start in range(0, len(payload), chunk):
            piece = payload[start : start + chunk]
            handler.wfile.write(piece)
            handler.wfile.flush()
            if self._closing.wait(len(piece) / bandwidth):
                return False
        return True

    # ---- routing (called with the lock held)

    def _route(
        self, method: str, path: str, raw_query: str, query: dict[str, str], handler: _Handler
    ) -> Reply:
        corpus = self._corpus
        if path.startswith("/media/images/"):
            return self._media(method, path, handler)
        if not path.startswith("/api/"):
            return html_reply(404, _HTML_404)
        if not path.endswith("/"):
            location = f"{self.url}{path}/" + (f"?{raw_query}" if raw_query else "")
            reply = html_reply(301, b"", kind="redirect")
            reply.headers["Location"] = location
            return reply
        parts = path.strip("/").split("/")[1:]  # without "api"
        page_url = f"{self.url}{path}"
        match parts:
            case ["collections"]:
                payload = paginate(corpus.public_collections(), query, page_url)
                return json_reply(200, payload, "collections_list")
            case ["collections", cid] if cid.isdigit():
                col = corpus.collections.get(int(cid))
                if col is None:
                    return json_reply(404, NOT_FOUND, "collection")
                if col.private:
                    return json_reply(403, FORBIDDEN, "collection")
                return json_reply(200, public_record(col.record), "collection")
            case ["collections", cid, "images"] if cid.isdigit():
                col = corpus.collections.get(int(cid))
                if col is None:
                    return json_reply(404, NOT_FOUND, "collection_images")
                if col.private:
                    return json_reply(403, FORBIDDEN, "collection_images")
                payload = paginate(corpus.collection_images(col.id), query, page_url)
                return json_reply(200, payload, "collection_images")
            case ["images"]:
                return json_reply(
                    200, paginate(corpus.public_images(), query, page_url), "images_list"
                )
            case ["images", iid] if iid.isdigit():
                im = corpus.images.get(int(iid))
                if im is None:
                    return json_reply(404, NOT_FOUND, "image")
                if corpus.is_private_image(im.id):
                    return json_reply(403, FORBIDDEN, "image")
                return json_reply(200, public_record(im.record), "image")
            case ["decode"]:
                return self._decode(query)
        return html_reply(404, _HTML_404)

    def _decode(self, query: dict[str, str]) -> Reply:
        text = query.get("neurovault", "")
        if not text.isdigit():
            return html_reply(400, HTML_ERROR_PAGE, "decode")
        image_id = int(text)
        corpus = self._corpus
        known = image_id in corpus.images and not corpus.is_private_image(image_id)
        answer = decode(self.seed, image_id, known)
        if answer.outcome is DecodeOutcome.ERROR:
            return html_reply(500, "<h1>Internal Server Error</h1>", "decode")
        if answer.outcome is DecodeOutcome.HTML:
            return html_reply(200, HTML_ERROR_PAGE, "decode")
        payload = {"data": {"id": image_id, "type": "neurovault", "values": answer.values}}
        return json_reply(200, payload, "decode")

    def _media(self, method: str, path: str, handler: _Handler) -> Reply:
        kind = "file_head" if method == "HEAD" else "file_get"
        parts = path.split("/")  # ["", "media", "images", cid, name]
        if len(parts) != 5 or not parts[3].isdigit():
            return html_reply(404, _HTML_404, kind)
        corpus = self._corpus
        key = (int(parts[3]), unquote(parts[4]))
        if key in corpus.media:
            image_id = corpus.media[key]
            data, is_image = corpus.file_bytes(image_id), True
        elif key in corpus.label_files:
            image_id = corpus.label_files[key]
            data, is_image = corpus.label_file_bytes(image_id), False
        else:
            return html_reply(404, _HTML_404, kind)
        if corpus.is_private_image(image_id):
            return html_reply(403, "<h1>403 Forbidden</h1>", kind)
        modified = corpus.images[image_id].content_date.replace(microsecond=0)
        headers = {
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Content-Encoding": "utf-8",
            "Accept-Ranges": "bytes",
        }
        since = handler.headers.get("If-Modified-Since")
        if since:
            try:
                if modified <= parsedate_to_datetime(since):
                    return Reply(304, b"", "application/octet-stream", headers, kind)
            except (TypeError, ValueError):
                pass  # unparseable: ignore the header, as servers do
        wanted = _parse_range(handler.headers.get("Range"), len(data))
        if wanted == "bad":
            headers["Content-Range"] = f"bytes */{len(data)}"
            return Reply(416, b"", "application/octet-stream", headers, kind)
        if isinstance(wanted, tuple):
            first, last = wanted
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return Reply(206, data[first : last + 1], "application/octet-stream", headers, kind)
        full_image = image_id if (is_image and method == "GET") else None
        return Reply(200, data, "application/octet-stream", headers, kind, full_image)

    # ---- control endpoint

    def _control(self, handler: _Handler, method: str, path: str) -> Reply:
        if not _is_loopback(handler.client_address[0]):
            return json_reply(
                403, {"detail": "The control endpoint only answers loopback clients."}
            )
        with self._lock:
            self._counters["control"] += 1
        action = path[len("/_control/") :].strip("/")
        if method in ("GET", "HEAD") and action == "counters":
            with self._lock:
                payload = {
                    "counters": dict(self._counters),
                    "downloads": {str(k): v for k, v in self._downloads.items()},
                }
            return json_reply(200, payload)
        actions: dict[str, Callable[..., Any]] = {
            "mutate_content": self.mutate_content,
            "mutate_metadata": self.mutate_metadata,
            "delete_image": self.delete_image,
            "add_collection": self.add_collection,
            "set_faults": self.set_faults,
            "set_network": self.set_network,
            "reset_counters": self.reset_counters,
        }
        if method != "POST" or action not in actions:
            return json_reply(404, {"detail": f"No control action {action!r} for {method}."})
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            arguments = json.loads(raw) if raw.strip() else {}
            if not isinstance(arguments, dict):
                raise ValueError("the body must be a JSON object of keyword arguments")
            result = actions[action](**arguments)
        except (TypeError, ValueError, KeyError) as exc:
            return json_reply(400, {"detail": f"{action}: {exc}"})
        return json_reply(200, {"ok": True, "result": result})


def serve_forever(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    corpus: str = "demo",
    n_images: int | None = None,
    seed: int = 0,
) -> None:
    """Serve until interrupted (Ctrl-C): what ``nv-datalad emulator`` runs."""
    with Emulator(corpus=corpus, host=host, port=port, n_images=n_images, seed=seed) as emu:
        logger.info("NeuroVault emulator (%s corpus) serving at %s", corpus, emu.url)
        logger.info("API: %s/api/collections/ · Neurosynth: %s/api/decode/", emu.url, emu.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            logger.info("emulator stopped")
