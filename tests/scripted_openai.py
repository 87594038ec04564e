"""A real HTTP server on loopback that speaks the OpenAI chat API with scripted replies.

Used as the service's generation backend (`ARENA_GENERATION_URL`: candidates answer
from a script, instantly) and as an LLM judge endpoint (scripted verdicts), so arena tests
exercise real HTTP end to end without loading a model.

    server = ScriptedOpenAI(answers={"alpha": lambda prompt: "4"}, judges={"fair": fair_judge}).start()
    server.url   # http://127.0.0.1:PORT

With `stream: true` a reply comes as SSE chunks, one word-sized piece each, `stream_delay_s`
apart (so a test can watch an answer grow); with `stream_gate` set, the second piece waits
for that event (up to 10 s; `gate_opened` records whether it came), so a test can prove its
reader saw the first piece while the answer was still being written; a model in `broken` sends an `error` event
after its first piece, as vLLM does when generation fails mid-stream.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Messages = list[dict[str, str]]


class ScriptedOpenAI:
    """`GET /v1/models` and `POST /v1/chat/completions`: a candidate's reply is
    `answers[model](last user message)`, a judge's is `judges[model](messages)`."""

    def __init__(self, answers: dict[str, Callable[[str], str]], judges: dict[str, Callable[[Messages], str]] | None = None) -> None:
        self.answers = answers
        self.judges = judges or {}
        self.calls: list[dict] = []
        self.stream_delay_s = 0.0
        self.broken: set[str] = set()
        self.stream_gate: threading.Event | None = None
        self.gate_opened: list[bool] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _stream(self, model: str, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def event(data: dict | str) -> None:
                    self.wfile.write(b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n")
                    self.wfile.flush()

                def chunk(delta: dict, finish: str | None = None) -> dict:
                    return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

                try:
                    event(chunk({"role": "assistant", "content": ""}))
                    for n, piece in enumerate(re.findall(r"\S+\s*|\s+", text)):
                        if n and owner.stream_delay_s:
                            time.sleep(owner.stream_delay_s)
                        if n == 1 and owner.stream_gate is not None:
                            owner.gate_opened.append(owner.stream_gate.wait(10))
                        event(chunk({"content": piece}))
                        if model in owner.broken:
                            event({"error": {"message": "CUDA out of memory (scripted)", "type": "server_error"}})
                            return
                    event(chunk({}, "stop"))
                    event({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model, "choices": [],
                           "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()),
                                     "total_tokens": 1 + len(text.split())}})
                    event("[DONE]")
                except (BrokenPipeError, ConnectionResetError):  # the reader went away
                    pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    names = sorted([*owner.answers, *owner.judges])
                    self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                owner.calls.append({"path": self.path, "body": body, "authorization": self.headers.get("Authorization")})
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "only chat completions here"}})
                    return
                model, messages = body.get("model"), body.get("messages", [])
                if model in owner.judges:
                    text = owner.judges[model](messages)
                elif model in owner.answers:
                    user = [m["content"] for m in messages if m.get("role") == "user"]
                    text = owner.answers[model](user[-1] if user else "")
                else:
                    self._send(404, {"error": {"message": f"The model `{model}` does not exist.", "code": "model_not_found"}})
                    return
                if body.get("stream"):
                    self._stream(model, text)
                    return
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()), "total_tokens": 1 + len(text.split())},
                })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ScriptedOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answers_in(messages: Messages) -> tuple[str, str]:
    """(answer A, answer B) from the pairwise judge prompt of `arena.judge`."""
    user = messages[1]["content"]
    a = user.split("[The Start of Assistant A's Answer]\n", 1)[1].split("\n[The End of Assistant A's Answer]", 1)[0]
    b = user.split("[The Start of Assistant B's Answer]\n", 1)[1].split("\n[The End of Assistant B's Answer]", 1)[0]
    return a, b
