#!/usr/bin/env bash
# Figure 7: training tokens/s against the LayerDrop rate (short runs; speed only).
set -euo pipefail
source "$(dirname "$0")/common.sh"
train experiment=figure7_lm layerdrop.p=0,0.1,0.2,0.3,0.4,0.5 "$@"
report figure7
