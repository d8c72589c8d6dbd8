#!/usr/bin/env bash
# The cpu LM regime map at a long budget (the regime issue: find a regime where runs converge, depth
# matters and LayerDrop can show what it does): on the 1M-token regime, the 6-layer baseline (dropout 0.1),
# the 3-layer model from scratch (0.1) and the LayerDrop 0.2 row (0.0, its own pick) trained up to 12,000
# steps (48 epochs; one cosine period), validated every 250, each reporting its best checkpoint and
# stopping after 3 validations without a better one. Results: results/regime_lm_map/ (the regime page of
# every regime_lm run in the record store, with its map). Runs already in the store are skipped.
#   bash experiments/tune_lm_map.sh [seed=1,2,3 ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
MAP=(experiment=table2_lm data.max_train_tokens=1000000 trainer.max_steps=12000 trainer.val_check_interval=250
     select=best early_stop_patience=3 prune.strategies=[] artefact=regime_lm)
train "${MAP[@]}" layerdrop.p=0 model.dropout=0.1 model.n_layers=6,"$HALF" "$@"
train "${MAP[@]}" layerdrop.p=0.2 "${LAYERDROP_ROW[@]}" prune.strategies=[every_other] "$@"
report_to() { python -m layerdrop.report "$1" --scale "$SCALE" --out "$2"; }
if [ "${LAYERDROP_DRY:-0}" = 1 ]; then report_to() { echo "report $1 -> $2"; }; fi
report_to regime_lm results/regime_lm_map
