"""A stand-in for our server in the soak test: it answers Next Sample and label uploads as ours does, and can misbehave
on purpose: keep ``LEAK_KIB`` KiB of memory for good at every request (a leak), or answer every ``FAIL_EVERY``-th
upload with a 500. Standard library only, so it starts in a blink and its memory is its own.

    python leaky_server.py PORT IMAGE_IDS LEAK_KIB FAIL_EVERY     (IMAGE_IDS comma-separated; 0 = never)
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAUSE_S = 0.005  # per request: bounds the request rate, and with it what a leak can take in a test's few seconds


def main() -> None:
    port, image_ids, leak_kib, fail_every = int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
    kept: list[bytes] = []
    next_image = itertools.cycle(image_ids)
    uploads = itertools.count(1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the soak's clients use it
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, *args) -> None:
            pass

        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def take_request(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(PAUSE_S)
            if leak_kib:
                with lock:
                    kept.append(b"\x01" * (leak_kib * 1024))  # written, so resident

        def do_GET(self) -> None:  # /info/: the harness waits for it
            self.answer(200, {"name": "stand-in"})

        def do_POST(self) -> None:  # /activelearning/random
            self.take_request()
            with lock:
                image = next(next_image)
            self.answer(200, {"id": image})

        def do_PUT(self) -> None:  # /datastore/label
            self.take_request()
            with lock:
                number = next(uploads)
            if fail_every and number % fail_every == 0:
                self.answer(500, {"detail": f"upload {number} fails on purpose"})
            else:
                self.answer(200, {})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
