"""A stand-in for llama.cpp's llama-server: the flags TileScribe passes, /health and /v1/models behind the key.

It records what it was given (argv, and the key file's mode and its folder's) in $FAKE_LLAMA_RECORD.
FAKE_LLAMA_MODEL_ID sets the model id /v1/models reports; FAKE_LLAMA_SLOW_S delays /health.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> int:
    args = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--") or argv[i].startswith("-"):
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
            args[argv[i]] = value
            i += 2 if value else 1
        else:
            i += 1
    keys = []
    record = {"argv": argv}
    if "--api-key-file" in args:
        path = args["--api-key-file"]
        record["key_file_mode"] = stat.S_IMODE(os.stat(path).st_mode)
        record["key_dir_mode"] = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        with open(path, encoding="utf-8") as handle:
            keys = [line.rstrip("\n") for line in handle if line.strip() and not line.startswith("#")]
    if "--api-key" in args:
        keys.append(args["--api-key"])
    if os.environ.get("FAKE_LLAMA_RECORD"):
        with open(os.environ["FAKE_LLAMA_RECORD"], "w", encoding="utf-8") as handle:
            json.dump(record, handle)
    started = time.monotonic()
    slow = float(os.environ.get("FAKE_LLAMA_SLOW_S", "0"))
    model_id = os.environ.get("FAKE_LLAMA_MODEL_ID", os.path.basename(args.get("-m", "model.gguf")))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if keys and self.headers.get("Authorization") != f"Bearer {keys[0]}":
                return self._send(401, {"error": "Invalid API Key"})
            if self.path == "/health":
                if time.monotonic() - started < slow:
                    return self._send(503, {"error": "Loading model"})
                return self._send(200, {"status": "ok"})
            if self.path == "/v1/models":
                return self._send(200, {"data": [{"id": model_id}]})
            if self.path == "/props":
                return self._send(200, {"build_info": "fake", "total_slots": 1})
            return self._send(404, {"error": "not found"})

        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    host, port = args.get("--host", "127.0.0.1"), int(args["--port"])
    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError:  # what llama.cpp's server-http.cpp logs, then exits
        print(f"srv    start: couldn't bind HTTP server socket, hostname: {host}, port: {port}", flush=True)
        return 1
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
