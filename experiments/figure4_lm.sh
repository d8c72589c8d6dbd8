#!/usr/bin/env bash
# Figure 4 (LM): what to drop (left) and which layers to keep (right).
#   SCALE=cpu|paper bash experiments/figure4_lm.sh [extra Hydra overrides]
set -euo pipefail
source "$(dirname "$0")/common.sh"
# left: the same drop budget p = 0.2 spent on heads, sub-layers, layers and their combinations
# (every structured dropout at the LayerDrop rows' own dropout, LAYERDROP_ROW: its layers row is Table 2's model)
train experiment=figure4_lm layerdrop.target=layers,sublayers,heads,heads+layers,heads+sublayers \
  prune.strategies=[] "${LAYERDROP_ROW[@]}" "${SELECT[@]}" "$@"
# right: every strategy picks half the layers of the LayerDrop model (the Table 2 model, reused) ...
train experiment=figure4_lm "prune.strategies=[every_other,first,last,search_on_valid]" \
  "prune.depths=[$HALF]" "${LAYERDROP_ROW[@]}" "${SELECT[@]}" "$@"
# ... and data-driven pruning keeps the top half of a model trained with learned per-layer rates
train experiment=figure4_lm layerdrop.learned=true "prune.strategies=[data_driven,every_other]" \
  "prune.depths=[$HALF]" "${LAYERDROP_ROW[@]}" "${SELECT[@]}" "$@"
report figure4
