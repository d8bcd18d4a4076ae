#!/bin/bash
# benches/outputs.sh BIN OUTDIR: the outputs a refactor must leave bit-identical (the 30 fine-tune evaluation
# answers, greedy completions at 1 and 2 threads, traces, the quick experiment). Run it with the binary of the
# commit before and after, then compare the two directories (timings aside). Run from the repository root.
B=$1; O=$2; mkdir -p "$O"
$B --threads 1 finetune --eval data/finetune/questions-eval.jsonl --eval data/finetune/function-calls-eval.jsonl --json > $O/eval.json 2>/dev/null
for p in "user: What is the capital of France?\nAI:" "The three primary colours are" "<|im_start|>user\nWrite a haiku about stopping.<|im_end|>\n<|im_start|>assistant\n"; do
  $B --threads 1 complete "$p" --max-tokens 64 --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps([d['text'],d['tokens'],d['finish_reason']]))" >> $O/complete.txt
  $B --threads 2 complete "$p" --max-tokens 64 --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps([d['text'],d['tokens'],d['finish_reason']]))" >> $O/complete.txt
done
$B --threads 1 trace "user: What is the capital of France?\nAI:" --stop "\nuser:" --max-tokens 40 --jsonl > $O/trace.jsonl 2>/dev/null
$B --threads 1 trace --chat "Name a colour." --jsonl > $O/trace-chat.jsonl 2>/dev/null
$B --threads 1 experiment --quick --json > $O/experiment.json 2>/dev/null
echo done
