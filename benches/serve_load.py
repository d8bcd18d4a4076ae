#!/usr/bin/env python3
"""A load generator for OpenAI-compatible servers: N concurrent streaming clients, aggregate tokens/s, latency.

    python3 benches/serve_load.py --endpoint http://127.0.0.1:8080 --clients 8 [--requests 4] [--max-tokens 64]

Each client sends --requests streaming /v1/completions requests one after another (prompt
"user: Tell me about the number K.\\nAI:", temperature 0.8, seed K, `ignore_eos` so that every request
writes exactly --max-tokens tokens on every server). It counts the streamed chunks that carry text and the
`usage` the server reports (`stream_options.include_usage`). Printed (and with --json, one JSON line):
aggregate generated tokens/s (all completion tokens / wall time of the whole run), p50 and p99 of the request
latency (send to last byte) and of the time to first token. Standard library only; not part of CI.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def one(url, k, max_tokens, model):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    body = {
        "prompt": f"user: Tell me about the number {k}.\nAI:",
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": k,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model:
        body["model"] = model
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        return {"status": resp.status, "error": resp.read()[:200].decode(errors="replace")}
    first, chunks, usage = None, 0, None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        v = json.loads(data)
        if "error" in v:
            return {"status": 500, "error": str(v["error"])[:200]}
        if v.get("usage"):
            usage = v["usage"].get("completion_tokens")
        for c in v.get("choices") or []:
            if c.get("text"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    conn.close()
    return {"status": 200, "latency": total, "ttft": first if first is not None else total,
            "tokens": usage if usage is not None else chunks}


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(1, min(len(xs), int(-(-len(xs) * p // 1)))) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True, help="the server's base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--requests", type=int, default=4, help="requests per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default=None, help="the request's model field")
    ap.add_argument("--label", default="", help="a name printed with the figures")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results, lock = [], threading.Lock()

    def client(c):
        for i in range(a.requests):
            r = one(a.endpoint, c * a.requests + i, a.max_tokens, a.model)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]
    bad = [r for r in results if r["status"] != 200]
    if not ok:
        sys.exit(f"every request failed: {bad[:3]}")
    tokens = sum(r["tokens"] for r in ok)
    out = {
        "label": a.label, "clients": a.clients, "requests": len(results), "failed": len(bad),
        "tokens": tokens, "wall_s": round(wall, 2), "tok_s": round(tokens / wall, 1),
        "latency_p50_s": round(pct([r["latency"] for r in ok], 0.5), 2),
        "latency_p99_s": round(pct([r["latency"] for r in ok], 0.99), 2),
        "ttft_p50_s": round(pct([r["ttft"] for r in ok], 0.5), 2),
        "ttft_p99_s": round(pct([r["ttft"] for r in ok], 0.99), 2),
        "load": float(open("/proc/loadavg").read().split()[0]),
    }
    if a.json:
        print(json.dumps(out), flush=True)
    else:
        print(f"{a.label} {a.clients} clients: {out['tok_s']} tok/s aggregate ({tokens} tokens in {wall:.1f} s), "
              f"latency p50 {out['latency_p50_s']} s p99 {out['latency_p99_s']} s, "
              f"first token p50 {out['ttft_p50_s']} s p99 {out['ttft_p99_s']} s, {len(bad)} failed",
              flush=True)
    if bad:
        print("failures:", bad[:3], file=sys.stderr)


if __name__ == "__main__":
    main()
