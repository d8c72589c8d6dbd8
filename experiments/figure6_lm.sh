#!/usr/bin/env bash
# Figure 6 (LM): training LayerDrop rate vs inference-time pruning (every other, every depth).
# p = 0 and 0.2 are the Table 2 models, reused from the run cache.
set -euo pipefail
source "$(dirname "$0")/common.sh"
train experiment=figure6_lm layerdrop.p=0,0.1,0.2,0.5 "${SELECT[@]}" "$@"
report figure6
