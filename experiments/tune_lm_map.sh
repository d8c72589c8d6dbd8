#!/usr/bin/env bash
# The cpu LM regime map (the regime issue: find a regime where runs converge, depth matters and LayerDrop
# can show what it does). On 1M training tokens, one budget of STEPS steps (one cosine period; 12,000 =
# 48 epochs, 5,000 = 20), validated every 250, each run reporting its best checkpoint and stopping after
# PATIENCE validations without a better one:
#   - the 6-layer baseline, its dropout picked on valid from {0.1, 0.2, 0.3} (0.3 only with DROPOUTS=all);
#   - 3 layers from scratch (dropout 0.1), for "depth matters" and C2;
#   - the LayerDrop 0.2 row at dropout 0.0 and 0.1 (fairseq's tip is 0.1 less than the baseline; at 1M
#     tokens and 12,000 steps 0.0 over-fits: valid 100.2 against the baseline's 89.4).
# Both 6-layer families are pruned every-other to 3 layers (C1, C2). Results: results/regime_lm_map/ (the
# regime page of every regime_lm run in the record store, with its map). Runs in the store are skipped.
#   STEPS=5000 bash experiments/tune_lm_map.sh [seed=1,2,3 ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-12000}
PATIENCE=${PATIENCE:-6}
BASE_DROPOUTS=$([ "${DROPOUTS:-}" = all ] && echo 0.1,0.2,0.3 || echo 0.1,0.2)
MAP=(experiment=table2_lm data.max_train_tokens=1000000 trainer.max_steps="$STEPS" trainer.val_check_interval=250
     select=best early_stop_patience="$PATIENCE" artefact=regime_lm)
train "${MAP[@]}" layerdrop.p=0 model.dropout=0.1 prune.strategies=[every_other] "$@"
train "${MAP[@]}" layerdrop.p=0 model.dropout=0.1 model.n_layers="$HALF" prune.strategies=[] "$@"
train "${MAP[@]}" layerdrop.p=0.2 model.dropout=0.1,0.0 prune.strategies=[every_other] "$@"
train "${MAP[@]}" layerdrop.p=0 model.dropout="${BASE_DROPOUTS#0.1,}" prune.strategies=[every_other] "$@"
report_to() { python -m layerdrop.report "$1" --scale "$SCALE" --out "$2"; }
if [ "${LAYERDROP_DRY:-0}" = 1 ]; then report_to() { echo "report $1 -> $2"; }; fi
report_to regime_lm results/regime_lm_map
