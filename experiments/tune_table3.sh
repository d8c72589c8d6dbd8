#!/usr/bin/env bash
# Table 3's regularisation picked on valid, as the paper tuned it: each task's baseline dropout from
# {0.1, 0.2, 0.3} and its LayerDrop row's from {0.0, 0.1} (fairseq's tip: about 0.1 less once LayerDrop is
# on), in Table 3's cpu regime (best on valid, early stopping). The runs Table 3 already trained (dropout
# 0.1) come from the run cache and are only tagged. About 8 min a summarisation run, 10 a QA run.
#   bash experiments/tune_table3.sh [extra Hydra overrides]
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in sum qa; do
  train experiment=table3_$task "${SELECT[@]}" layerdrop.p=0.2 model.dropout=0.0,0.1 artefact=regime_$task "${@}"
  train experiment=table3_$task "${SELECT[@]}" layerdrop.p=0 model.dropout=0.1,0.2,0.3 artefact=regime_$task "${@}"
  report regime_$task
done
