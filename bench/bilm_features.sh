#!/usr/bin/env bash
# docs/benchmarks.md, "Pre-trained biLM features": the same tagger with and without ELMo-style
# features, on UD-EWT POS and MSRA NER, at a fixed small budget (the machine is shared: epochs and
# example counts are fixed, not wall time). Run from the repository root; writes runs/bench_bilm/.
# SEED1=1 adds the four tagger runs with seed 1, FINETUNE=1 the two runs with the biLM fine-tuned.
set -euo pipefail
R=runs/bench_bilm
T="--set trainer.num_threads=1 --set trainer.progress=false --overwrite"
rnnkit() { python -m rnnkit "$@"; }
# biLMs: UD-EWT's full training text (examples/bilm_ud.yaml, 2 epochs), MSRA's first 6,000
# training sentences (2 epochs)
[ -e runs/bilm_ud/best ] || rnnkit pretrain examples/bilm_ud.yaml $T
rnnkit pretrain examples/bilm_msra.yaml --set data.max_train_examples=6000 $T
# UD-EWT POS: the first 4,000 training sentences, 3 epochs, full dev and test
UD="--set data.max_train_examples=4000 --set trainer.epochs=3 $T"
rnnkit train examples/ud_pos.yaml      $UD --out $R/ud_pos
rnnkit train examples/ud_pos_bilm.yaml $UD --out $R/ud_pos_bilm
# MSRA NER: the first 3,000 training sentences, 3 epochs, full test
MS="--set data.max_train_examples=3000 --set trainer.epochs=3 $T"
rnnkit train examples/msra_ner.yaml      $MS --out $R/msra_ner
rnnkit train examples/msra_ner_bilm.yaml $MS --out $R/msra_ner_bilm
# the same four tagger runs again with another seed (the biLMs stay), to see the run-to-run spread
if [ "${SEED1:-0}" = 1 ]; then
  rnnkit train examples/ud_pos.yaml        $UD --set trainer.seed=1 --out $R/ud_pos_s1
  rnnkit train examples/ud_pos_bilm.yaml   $UD --set trainer.seed=1 --out $R/ud_pos_bilm_s1
  rnnkit train examples/msra_ner.yaml      $MS --set trainer.seed=1 --out $R/msra_ner_s1
  rnnkit train examples/msra_ner_bilm.yaml $MS --set trainer.seed=1 --out $R/msra_ner_bilm_s1
fi
# the biLM fine-tuned with the tagger instead of frozen (seed 0)
if [ "${FINETUNE:-0}" = 1 ]; then
  rnnkit train examples/ud_pos_bilm.yaml   $UD --set model.options.contextual.freeze=false --out $R/ud_pos_bilm_ft
  rnnkit train examples/msra_ner_bilm.yaml $MS --set model.options.contextual.freeze=false --out $R/msra_ner_bilm_ft
fi
