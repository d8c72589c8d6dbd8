#!/usr/bin/env bash
# Table 8: the Table 2 LayerDrop LM (each of its seeds) pruned to half depth, scored, fine-tuned, scored
# again (python -m layerdrop.finetune). Trains the LayerDrop runs first if the run cache lacks them.
#   SCALE=cpu|paper bash experiments/table8_lm.sh [extra Hydra overrides, e.g. finetune.steps=800]
set -euo pipefail
source "$(dirname "$0")/common.sh"
# every seed of the Table 2 LayerDrop row, unless the overrides name seeds themselves
case " $* " in *" seed="*) SEEDS=() ;; *) SEEDS=(seed=1,2,3) ;; esac
LAYERDROP=(experiment=table2_lm layerdrop.p=0.2 "${LAYERDROP_ROW[@]}")
train "${WEIGHTS[@]}" "${LAYERDROP[@]}" role=layerdrop artefact=table2 "${SEEDS[@]}" "${SELECT[@]}" "${@}"
finetune "${LAYERDROP[@]}" "${SEEDS[@]}" "${SELECT[@]}" "${@}"
report table8
