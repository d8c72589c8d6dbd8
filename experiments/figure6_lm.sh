#!/usr/bin/env bash
# Figure 6 (LM): training LayerDrop rate vs inference-time pruning (every other, every depth).
# p = 0 and 0.2 are the Table 2 models, reused from the run cache: the baseline at its dropout, every LayerDrop
# rate at the LayerDrop rows' own (LAYERDROP_ROW, picked on valid at p = 0.2).
set -euo pipefail
source "$(dirname "$0")/common.sh"
train experiment=figure6_lm layerdrop.p=0 "${SELECT[@]}" "$@"
train experiment=figure6_lm layerdrop.p=0.1,0.2,0.5 "${LAYERDROP_ROW[@]}" "${SELECT[@]}" "$@"
report figure6
