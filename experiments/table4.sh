#!/usr/bin/env bash
# Table 4: encoders pretrained without and with LayerDrop 0.2, and a twice-as-deep one with LayerDrop,
# each fine-tuned at full depth (LayerDrop kept while fine-tuning, as the paper) on every stand-in.
# Runs already in the run cache are skipped.   SCALE=cpu|paper bash experiments/table4.sh [seed=1,2,3 ...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0 "${SELECT[@]}" "$@"
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" "$@"
train "${WEIGHTS[@]}" experiment=pretrain_mlm_large layerdrop.p=0.2 "${SELECT[@]}" "$@"
classify experiment=pretrain_mlm layerdrop.p=0 "${SELECT[@]}" artefact=table4 role=baseline "$@"
classify experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" artefact=table4 role=layerdrop "$@"
classify experiment=pretrain_mlm_large layerdrop.p=0.2 "${SELECT[@]}" artefact=table4 role=deep_layerdrop "$@"
report table4
