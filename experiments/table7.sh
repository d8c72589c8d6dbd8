#!/usr/bin/env bash
# Table 7 and Figure 3: the LayerDrop encoder pruned every-other to half and a quarter of its depth before
# fine-tuning (LayerDrop off, as the paper), against encoders pretrained from scratch at those depths,
# and both at full depth (Figure 3's 0%), and against students of those depths distilled from the
# full-depth encoder pretrained without LayerDrop (DistilBERT's recipe; lit/distill.py).
#   SCALE=cpu|paper bash experiments/table7.sh [seed=1,2,3 ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" "$@"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0 "${SELECT[@]}" "$@"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$HALF_ENC" "${SELECT[@]}" "$@"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$QUARTER" "${SELECT[@]}" "$@"
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
# Distilled students, one per seed of the arguments (seed=1,2,3; default 1), each of its seed's teacher
SEEDS=1
OTHER=()
for arg in "$@"; do
  case "$arg" in seed=*) SEEDS=${arg#seed=} ;; *) OTHER+=("$arg") ;; esac
done
for seed in ${SEEDS//,/ }; do
  teacher=$(python -m layerdrop.runkey scale="$SCALE" experiment=pretrain_mlm layerdrop.p=0 "${SELECT[@]}" "${OTHER[@]}" \
    seed="$seed")
  for depth in "$HALF_ENC" "$QUARTER"; do
    role=$([ "$depth" = "$HALF_ENC" ] && echo distilled_half || echo distilled_quarter)
    student=(experiment=pretrain_mlm layerdrop.p=0 model.n_layers="$depth" task.lit_module=layerdrop.lit.distill.DistillLitModule
             +task.module_args.teacher="$teacher" "${SELECT[@]}" "${OTHER[@]}" seed="$seed")
    train "${WEIGHTS[@]}" "${student[@]}"
    classify "${student[@]}" artefact=table7 role="$role"
  done
done
report table7
