#!/usr/bin/env bash
# Figure 8: encoders pretrained at LayerDrop 0.1, 0.2 and 0.5, each pruned every-other to half and a
# quarter of its depth (and kept whole), then fine-tuned on every stand-in.
#   SCALE=cpu|paper bash experiments/figure8.sh [seed=1,2,3 ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0.1,0.2,0.5 "${SELECT[@]}" "$@"
classify experiment=pretrain_mlm layerdrop.p=0.1,0.2,0.5 "${SELECT[@]}" classify.depth=null,"$HALF_ENC","$QUARTER" \
  artefact=figure8 "$@"
report figure8
