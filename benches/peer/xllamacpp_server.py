"""llama.cpp's own server, from the prebuilt `xllamacpp` wheel, on 127.0.0.1.

    python xllamacpp_server.py MODEL.gguf PORT [THREADS] [ngram-simple]

Serves /v1/completions, /v1/chat/completions and /tokenize until killed; one slot, 2,048 positions. With
`ngram-simple` it speculates as `llama-server --spec-type ngram-simple` does (drafts looked up in the
context, its default sizes). Used by `tests/external/probe.rs` and by hand as the peer `stoplab probe` is
measured against.
"""

import sys
import time

import xllamacpp as x


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    p = x.CommonParams()
    p.model.path = model
    p.n_ctx = 2048
    p.n_parallel = 1
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.warmup = False
    if len(sys.argv) > 4 and sys.argv[4] == "ngram-simple":
        p.speculative.types = [x.common_speculative_type.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
    server = x.Server(p)
    print("listening on", server.listening_address, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
