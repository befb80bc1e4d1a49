"""Model servers for the tests: llama.cpp's own server (xllamacpp) serving a small GGUF
model from a package, in a process of its own, and a scripted chat-completions server for
the exact cases a real model cannot be made to produce on demand.

    python tests/llm_servers.py MODEL.gguf PORT   # llama.cpp server; prints "ready" and
                                                  # serves until its stdin closes
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GOOD = "Chengdu set up a 200 million yuan angel investment guidance fund (天使投资引导资金) for seed-stage firms"
REPLIES = {
    # one supported sentence, one with an amount no passage states
    "good": f"{GOOD} [{{angel}}]. It also lends 5亿元 to every start-up [{{angel}}].",
    "wrong-citation": f"{GOOD} [9].",
    "invented-amount": "Chengdu set up a 300 million yuan angel investment guidance fund for seed-stage firms "
                       "[{angel}].",
    "wrong-language": "成都设立了2亿元天使投资引导资金，支持种子期科技型企业 [{angel}]。",
    "drip": f"{GOOD} [{{angel}}]. Seed-stage firms can apply to it [{{angel}}].",
    "escape": "\x1b[31mRED\x1b[0m [bold]loud[/bold] [link=http://x]click[/link] [{angel}].",
}
FAILURES = ("cut", "malformed", "empty", "slow", "needs-key")
DRIP_PAUSE_S = 5.0  # "drip" sends its first sentence, then waits this long before the rest
API_KEY = "sesame"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def passage_number(prompt: str, needle: str) -> int:
    """The marker under which the prompt gives the passage containing `needle`."""
    blocks = re.split(r"\n\n(?=\[\d+\] )", prompt)
    for block in blocks:
        m = re.search(r"\[(\d+)\] ", block)
        if m and needle in block:
            return int(m.group(1))
    return 1


class Scripted(ThreadingHTTPServer):
    """Answers /v1/models and /v1/chat/completions as the model named in the request
    says (REPLIES and FAILURES); records every chat request it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # clients that hang up are expected

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Scripted

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            names = list(REPLIES) + list(FAILURES)
            self._json(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append(body)
        model = body.get("model")
        if model == "needs-key" and self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._json(401, {"error": {"message": "Invalid API key \x1b[2J"}})
        if model not in REPLIES and model not in FAILURES:
            return self._json(404, {"error": {"message": f"model '{model}' not found"}})
        prompt = body["messages"][-1]["content"]
        text = REPLIES.get(model, GOOD + " [1].").replace("{angel}", str(passage_number(prompt, "天使投资引导资金")))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if model == "slow":
            time.sleep(3)
        events = [json.dumps({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
                  for w in re.findall(r"\S+\s*", text)]
        if model == "malformed":
            events = events[:2] + ["{not json"]
        if model == "empty":
            events = []
        if model == "cut":
            for e in events[:3]:
                self._chunk(f"data: {e}\n\n")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # mid-body: no final chunk, no [DONE]
            return
        for e in events + ["[DONE]"]:
            self._chunk(f"data: {e}\n\n")
            if model == "drip" and '"Seed-stage ' in e:  # the first sentence is complete now
                self.wfile.flush()
                time.sleep(DRIP_PAUSE_S)
        self._chunk("")

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def start_llama(model: Path, port: int, log: Path) -> subprocess.Popen:
    """llama.cpp's server on 127.0.0.1:port, one thread (its threads spin on busy cores)."""
    proc = subprocess.Popen([sys.executable, __file__, str(model), str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"llama.cpp server did not start: {line!r}; see {log}")
    return proc


def _serve(model: str, port: int) -> None:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = model
    params.n_ctx = 4096
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.warmup = False
    server = xlc.Server(params)
    print("ready", flush=True)
    sys.stdin.read()  # until the test session closes our stdin
    del server


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
