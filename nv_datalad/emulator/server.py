"""The emulator's HTTP side: NeuroVault's API, its media files and the Neurosynth decoder on one
loopback port, with knobs for mutations, hostile records, faults, latency and bandwidth, request
counters and a control endpoint.

``Emulator`` is what tests, benchmarks and ``server: embedded`` use (``cli`` serves one from the
command line). Every request is routed (``routes``) to a pure function that returns a ``Reply``;
faults and throttling (``faults``) are applied on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from nv_datalad.emulator.constants import check_loopback_host
from nv_datalad.emulator.control import PREFIX, control_reply
from nv_datalad.emulator.corpus import Corpus
from nv_datalad.emulator.faults import FaultDecision, Faults, Network, PageFault, decide_faults
from nv_datalad.emulator.records import Record, public_record
from nv_datalad.emulator.replies import Reply, html_reply
from nv_datalad.emulator.routes import route

logger = logging.getLogger(__name__)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 makes a client that opens 16 connections at once
    # wait a second for some (SYN retry): the emulator would time itself, not the client.
    request_queue_size = 128

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
        tiny: bool = False,
    ) -> None:
        check_loopback_host(host)
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
        self._page_faults: list[PageFault] = []
        self._server = _Server((host, port), self)
        try:
            bound_port = self._server.server_address[1]
            self.url = f"http://{_url_host(host)}:{bound_port}"
            self._corpus = Corpus(corpus, self.url, seed=seed, n_images=n_images, tiny=tiny)
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
        """Every live image's current record (private collections included), as copies, keyed
        by internal id (the record's ``id`` unless a hostile record says otherwise). At bench
        scale this writes every record: ask for what you need through the API instead."""
        with self._lock:
            corpus = self._corpus
            return {iid: corpus.public_record(iid) for iid in corpus.image_ids()}

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

    def move_file(self, image_id: int) -> str:
        """Same bytes under a new URL (see ``Corpus.move_file``); returns the new URL."""
        with self._lock:
            return self._corpus.move_file(int(image_id))

    def delete_image(self, image_id: int) -> None:
        with self._lock:
            self._corpus.delete_image(int(image_id))

    def add_collection(self, n_images: int = 3, **fields: Any) -> int:
        with self._lock:
            return self._corpus.add_collection(int(n_images), **fields)

    def inject_record(self, collection_id: int, overrides: dict[str, Any]) -> int:
        """A new image in ``collection_id`` whose record is then overridden key by key (see
        ``Corpus.inject_record``); returns its internal id."""
        if not isinstance(overrides, dict):
            raise ValueError("overrides must be a mapping of record keys to values")
        with self._lock:
            return self._corpus.inject_record(int(collection_id), dict(overrides))

    def add_hostile_images(self, kind: str, collection_id: int | None = None) -> list[int]:
        """Hostile records of a named kind (``hostile.HOSTILE_KINDS``: traversal-name,
        nul-name, long-name, string-id, negative-id, string-collection-id,
        foreign-collection-id, file-url-scheme, credentials-url, newline-url, bad-file-size,
        huge-record), listed like any other image; returns their internal ids."""
        target = None if collection_id is None else int(collection_id)
        with self._lock:
            return self._corpus.add_hostile_images(str(kind), target)

    def set_faults(
        self,
        error_rate: float = 0.0,
        truncate_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 30.0,
        malformed_json_rate: float = 0.0,
        paths: str | Sequence[str] | None = None,
        empty_rate: float = 0.0,
    ) -> None:
        """Replace the fault settings (all zero: no faults) and re-seed the fault RNG, so the
        same settings and request sequence fail the same requests."""
        prefixes = (paths,) if isinstance(paths, str) else (tuple(paths) if paths else None)
        faults = Faults(
            float(error_rate), float(truncate_rate), float(stall_rate), float(stall_seconds),
            float(malformed_json_rate), prefixes, float(empty_rate),
        )  # fmt: skip
        with self._lock:
            self._faults = faults
            self._fault_rng = random.Random(self.seed)

    def break_page(self, path: str, kind: str, offset: int = 0, times: int | None = None) -> None:
        """Spoil one listing page (``faults.PageFault``: "html-page" or "truncated-json") for
        ``times`` requests (None: all of them)."""
        fault = PageFault(str(path), str(kind), int(offset), None if times is None else int(times))
        with self._lock:
            self._page_faults.append(fault)

    def clear_page_faults(self) -> None:
        with self._lock:
            self._page_faults.clear()

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
            if path.startswith(PREFIX):
                with self._lock:
                    self._counters["control"] += 1
                reply = control_reply(
                    handler.client_address[0], method, path, lambda: self._body(handler),
                    self._control_actions(), self._counter_payload,
                )  # fmt: skip
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
                    reply = route(self._corpus, method, path, split.query, query, handler.headers)
                    for page_fault in self._page_faults:
                        reply = page_fault.spoil(path, query, reply)
                    if reply.kind:
                        self._counters[reply.kind] += 1
                    decision = decide_faults(faults, self._fault_rng, path, reply)
            if decision.stall and self._closing.wait(faults.stall_seconds):
                handler.close_connection = True
                return
            self._send(handler, method, reply, decision, network)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
            logger.debug("client went away during %s %s: %s", method, path, exc)
            handler.close_connection = True

    @staticmethod
    def _body(handler: _Handler) -> bytes:
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _counter_payload(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": dict(self._counters),
                "downloads": {str(k): v for k, v in self._downloads.items()},
            }

    def _control_actions(self) -> dict[str, Callable[..., Any]]:
        return {
            "mutate_content": self.mutate_content,
            "mutate_metadata": self.mutate_metadata,
            "move_file": self.move_file,
            "delete_image": self.delete_image,
            "add_collection": self.add_collection,
            "inject_record": self.inject_record,
            "add_hostile_images": self.add_hostile_images,
            "set_faults": self.set_faults,
            "break_page": self.break_page,
            "clear_page_faults": self.clear_page_faults,
            "set_network": self.set_network,
            "reset_counters": self.reset_counters,
        }

    def _send(self, handler: _Handler, method: str, reply: Reply, decision: FaultDecision,
              network: Network | None = None) -> None:
        if decision.error_status is not None:
            status = decision.error_status
            reply = html_reply(status, f"<h1>Server Error ({status})</h1>")
        body = reply.body
        if decision.malformed:
            body = body[: len(body) // 2]
        elif decision.empty:
            body = b""
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
        # counted first (taken back on failure): a client that read every byte finds it counted
        step = int(reply.image_id is not None and not truncate and bool(body))
        self._count_download(reply.image_id, step)
        if not self._write(handler, payload, network):
            self._count_download(reply.image_id, -step)
            handler.close_connection = True
            return
        handler.wfile.flush()

    def _count_download(self, image_id: int | None, step: int) -> None:
        if step and image_id is not None:
            with self._lock:
                self._downloads[image_id] += step

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
