#!/usr/bin/env bash
# Table 7 and Figure 3: the LayerDrop encoder pruned every-other to half and a quarter of its depth before
# fine-tuning (LayerDrop off, as the paper), against encoders pretrained from scratch at those depths,
# and both at full depth (Figure 3's 0%). The distilled student is not built yet.
#   SCALE=cpu|paper bash experiments/table7.sh [seed=1,2,3 ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
train experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" "$@"
train experiment=pretrain_mlm layerdrop.p=0 "${SELECT[@]}" "$@"
train experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$HALF_ENC" "${SELECT[@]}" "$@"
train experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$QUARTER" "${SELECT[@]}" "$@"
classify experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" artefact=table7 role=layerdrop "$@"
classify experiment=pretrain_mlm layerdrop.p=0 "${SELECT[@]}" artefact=table7 role=baseline "$@"
classify experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" classify.depth="$HALF_ENC" artefact=table7 \
  role=layerdrop_half "$@"
classify experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" classify.depth="$QUARTER" artefact=table7 \
  role=layerdrop_quarter "$@"
classify experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$HALF_ENC" "${SELECT[@]}" artefact=table7 \
  role=scratch_half "$@"
classify experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$QUARTER" "${SELECT[@]}" artefact=table7 \
  role=scratch_quarter "$@"
report table7
