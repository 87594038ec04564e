"""A stand-in for vLLM's OpenAI server with runtime LoRA loading, real HTTP on loopback.

It answers as vLLM does (v0.8+, `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`):

- `GET /v1/models`: the base, then each loaded adapter with its path as `root` and the
  base as `parent`;
- `POST /v1/load_lora_adapter {"lora_name", "lora_path"}`: 200 and plain text; 400 when a
  field is missing or the name is already loaded; 404 "No adapter found" when the path holds
  no `adapter_config.json`; 400 with a message for names in `refuse`;
- `POST /v1/unload_lora_adapter {"lora_name"}`: 200 and plain text; 404 for an unknown name;
  `unload_error` (status, message) while it is set;
- `POST /v1/chat/completions` and `/v1/completions`: for a loaded adapter (or the base),
  `answer(lora_name, prompt)`; 404
  "does not exist" for anything else; errors as `{"error": {"message", "type", "code"}}`;
- with `runtime_lora=False` the two adapter routes are absent (FastAPI's 404).

`mounts` maps paths inside the "container" to real directories, as a volume does.
`restart()` forgets every runtime adapter, as a restarted vLLM does; `go_down()` and
`come_back()` refuse connections for a while and keep them (the same port after).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class VLLMStandIn:
    def __init__(self, base: str = "base-model", *, answer: Callable[[str, str], str] | None = None,
                 mounts: dict[str, str] | None = None, runtime_lora: bool = True) -> None:
        self.base = base
        self.answer = answer or (lambda lora, prompt: f"{lora} answers: {prompt}")
        self.mounts = mounts or {}
        self.runtime_lora = runtime_lora
        self.loras: dict[str, str] = {}  # name → path as given (vLLM's lora_requests)
        self.refuse: dict[str, str] = {}  # name → the error message a load gets
        self.unload_error: tuple[int, str] | None = None  # (status, message) every unload gets, as an overloaded server
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict | str) -> None:
                raw = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, {"detail": "Not Found"})
                with owner.lock:
                    owner.calls.append((self.path, {}))
                    cards = [{"id": owner.base, "object": "model", "root": f"/models/{owner.base}", "parent": None,
                              "max_model_len": 2048}]
                    cards += [{"id": n, "object": "model", "root": p, "parent": owner.base} for n, p in owner.loras.items()]
                self._send(200, {"object": "list", "data": cards})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                owner.calls.append((self.path, body))
                route = {"/v1/load_lora_adapter": self._load, "/v1/unload_lora_adapter": self._unload,
                         "/v1/chat/completions": self._chat, "/v1/completions": self._chat}.get(self.path)
                if route is None or (not owner.runtime_lora and route != self._chat):
                    return self._send(404, {"detail": "Not Found"})
                route(body)

            def _load(self, body: dict) -> None:
                name, path = body.get("lora_name"), body.get("lora_path")
                if not name or not path:
                    return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", "BadRequestError")
                with owner.lock:
                    if name in owner.loras:
                        return self._error(400, f"The lora adapter '{name}' has already been loaded.", "BadRequestError")
                    if name in owner.refuse:
                        return self._error(400, owner.refuse[name], "BadRequestError")
                    if not os.path.isfile(os.path.join(owner.real_path(path), "adapter_config.json")):
                        return self._error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
                    owner.loras[name] = path
                self._send(200, f"Success: LoRA adapter '{name}' added successfully.")

            def _unload(self, body: dict) -> None:
                name = body.get("lora_name")
                if owner.unload_error is not None:
                    return self._error(*owner.unload_error, "InternalServerError")
                with owner.lock:
                    if name not in owner.loras:
                        return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
                    del owner.loras[name]
                self._send(200, f"Success: LoRA adapter '{name}' removed successfully.")

            def _chat(self, body: dict) -> None:
                model = body.get("model")
                with owner.lock:
                    known = model == owner.base or model in owner.loras
                if not known:
                    return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                if "prompt" in body:  # /v1/completions
                    text = owner.answer(model, body["prompt"])
                    choice = {"index": 0, "text": text, "finish_reason": "stop"}
                else:
                    user = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
                    text = owner.answer(model, user[-1] if user else "")
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                self._send(200, {
                    "id": "cmpl-standin", "object": "chat.completion", "model": model, "choices": [choice],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()), "total_tokens": 1 + len(text.split())},
                })

        self._handler = Handler
        self._listen(0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _listen(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def real_path(self, path: str) -> str:
        """Where `path` (as the server sees it) lies on this machine, through `mounts`."""
        for inside, outside in self.mounts.items():
            if path == inside or path.startswith(inside.rstrip("/") + "/"):
                return outside + path[len(inside.rstrip("/")):]
        return path

    def restart(self) -> None:
        """Forget every runtime adapter, as a restarted vLLM does."""
        with self.lock:
            self.loras.clear()

    def chat_models(self) -> list[str]:
        return [body.get("model") for path, body in self.calls if path in ("/v1/chat/completions", "/v1/completions")]

    def start(self) -> VLLMStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def go_down(self) -> None:
        """Stop listening (connections are refused) and keep the loaded adapters, as a vLLM
        behind an unreachable network, or a frozen host, does."""
        self.stop()

    def come_back(self) -> VLLMStandIn:
        """Listen again on the same port, with the adapters it had."""
        self._listen(int(self.url.rsplit(":", 1)[1]))
        return self.start()
