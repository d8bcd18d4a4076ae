#!/usr/bin/env python3
"""How long a well-behaved request waits while slow clients flood a server.

    python3 benches/slow_clients.py http://127.0.0.1:8080 [--trickle 100] [--bodies 20] [--rounds 5]

Opens TRICKLE connections that send a request header one byte every 0.2 s (never finishing it) and
BODIES connections that send a whole header announcing a 1000-byte body, then one byte of it a second;
once they are all in, times ROUNDS well-behaved requests (GET /health, then a replayed
POST /v1/completions, each on a fresh connection) and prints each wait and the worst. Standard library
only; it stops every connection it opened before it exits.
"""

import argparse
import json
import socket
import threading
import time
import urllib.parse
import urllib.request

stop = threading.Event()


def trickle(host, port):
    try:
        s = socket.create_connection((host, port), timeout=60)
    except OSError:
        return
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    try:
        for b in head:
            if stop.is_set():
                break
            s.sendall(bytes([b]))
            time.sleep(0.2)
    except OSError:
        pass
    finally:
        s.close()


def slow_body(host, port):
    try:
        s = socket.create_connection((host, port), timeout=60)
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
        while not stop.is_set():
            s.sendall(b" ")
            time.sleep(1.0)
    except OSError:
        pass
    finally:
        try:
            s.close()
        except NameError:
            pass


def timed(url, body=None):
    t = time.monotonic()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            status = r.status
    except Exception as e:  # noqa: BLE001 - the wait is what is measured, the error is shown
        status = f"error: {e}"
    return time.monotonic() - t, status


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--trickle", type=int, default=100)
    ap.add_argument("--bodies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port or 80
    threads = [threading.Thread(target=trickle, args=(host, port), daemon=True) for _ in range(a.trickle)]
    threads += [threading.Thread(target=slow_body, args=(host, port), daemon=True) for _ in range(a.bodies)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    body = json.dumps({"prompt": "AI:", "replay": " Berlin.\nuser: x", "stop": ["\nuser:"]}).encode()
    worst = 0.0
    for i in range(a.rounds):
        for path, b in (("/health", None), ("/v1/completions", body)):
            wait, status = timed(a.url + path, b)
            worst = max(worst, wait)
            print(f"round {i}: {path:<16} {wait:6.2f} s  {status}", flush=True)
    print(f"worst wait: {worst:.2f} s with {a.trickle} header tricklers and {a.bodies} slow bodies open")
    stop.set()


if __name__ == "__main__":
    main()
