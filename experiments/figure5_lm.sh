#!/usr/bin/env bash
# Figure 5 (LM): which layers matter. Random half-depth sub-networks of the LayerDrop model (reused from
# Table 2), scored on valid; the figure averages over the sub-networks that lack each layer.
set -euo pipefail
source "$(dirname "$0")/common.sh"
# (at the LayerDrop rows' own dropout, LAYERDROP_ROW, so the model is Table 2's row, the same run key)
train experiment=figure5_lm "prune.strategies=[random]" "prune.depths=[$HALF]" prune.samples=20 \
  "prune.splits=[valid]" "${LAYERDROP_ROW[@]}" "${SELECT[@]}" "$@"
report figure5
