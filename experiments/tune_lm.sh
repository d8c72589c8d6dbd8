#!/usr/bin/env bash
# The cpu LM regime search (issue: converged, tuned, depth matters): the baseline's dropout picked on
# valid from {0.1, 0.2, 0.3}, as the paper tuned its regularisation, on a training budget where the
# runs reach their best valid perplexity (select=best, early stopping), with learning curves.
# Runs already in the run cache are skipped.   bash experiments/tune_lm.sh [extra Hydra overrides]
set -euo pipefail
source "$(dirname "$0")/common.sh"
REGIME=(data.max_train_tokens=1000000 trainer.max_steps=4000 trainer.val_check_interval=250 select=best
        early_stop_patience=3 prune.strategies=[] artefact=regime_lm)
train experiment=table2_lm layerdrop.p=0 model.dropout=0.1,0.2,0.3 "${REGIME[@]}" "${@}"
report regime_lm
