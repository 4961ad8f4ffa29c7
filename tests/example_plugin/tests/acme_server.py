"""A small Acme Video API on loopback, for the plugin's tests (what a plugin author would record
or fake for their own provider): generations move queued -> processing -> done over ~0.3 s."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from runner.sim.media import make_video

KEY = "acme-test-key"
FIELDS = {"model", "prompt", "image", "seconds"}


class AcmeServer:
    def __init__(self) -> None:
        self.generations: dict[str, dict] = {}
        self.submissions: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body: object = None, raw: bytes | None = None, kind: str = "application/json") -> None:
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("X-Api-Key") != KEY:
                    self._send(401, {"error": "invalid API key"})
                    return False
                return True

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self._authorized():
                    return
                unknown = sorted(set(body) - FIELDS)
                if unknown or not body.get("prompt"):
                    self._send(400, {"error": f"invalid fields: {', '.join(unknown) or 'prompt missing'}"})
                    return
                gen_id = uuid.uuid4().hex
                server.generations[gen_id] = {"created": time.monotonic(), "seconds": body.get("seconds", 4), "canceled": False}
                server.submissions.append({"id": gen_id, **body})
                self._send(201, {"id": gen_id, "state": "queued"})

            def do_GET(self) -> None:
                if self.path.startswith("/files/"):
                    gen_id = self.path.split("/")[2].removesuffix(".mp4")
                    gen = server.generations[gen_id]
                    self._send(200, raw=make_video(gen_id, gen["seconds"]), kind="video/mp4")
                    return
                if not self._authorized():
                    return
                gen_id = self.path.rsplit("/", 1)[1]
                gen = server.generations.get(gen_id)
                if gen is None:
                    self._send(404, {"error": "no such generation"})
                    return
                age = time.monotonic() - gen["created"]
                state = "canceled" if gen["canceled"] else "queued" if age < 0.1 else "processing" if age < 0.3 else "done"
                reply = {"id": gen_id, "state": state}
                if state == "done":
                    host, port = self.server.server_address[:2]
                    reply["video_url"] = f"http://{host}:{port}/files/{gen_id}.mp4"
                self._send(200, reply)

            def do_DELETE(self) -> None:
                if not self._authorized():
                    return
                gen = server.generations.get(self.path.rsplit("/", 1)[1])
                if gen is None:
                    self._send(404, {"error": "no such generation"})
                    return
                if time.monotonic() - gen["created"] >= 0.3 and not gen["canceled"]:
                    self._send(409, {"error": "generation already done"})
                    return
                gen["canceled"] = True
                self._send(204)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "AcmeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
