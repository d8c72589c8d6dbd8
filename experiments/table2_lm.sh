#!/usr/bin/env bash
# Table 2 and Figure 2 (LM panel): every training run that makes up the artefact, as Hydra sweeps.
# Runs already in the run cache (runs/) are skipped, so an interrupted reproduction resumes.
#   SCALE=cpu|paper bash experiments/table2_lm.sh [extra Hydra overrides]
set -euo pipefail
source "$(dirname "$0")/common.sh"
SCRATCH=$([ "$SCALE" = paper ] && echo 4,8,12 || echo 2,3)   # from-scratch depths for Figure 2

# Each run records its row of the table (role=...), which the report reads; extra overrides such as
# seed=1,2,3 add seeds to every row, and the report averages them.
# rows 1-2: baseline and LayerDrop at the base depth; both pruned every-other at every depth (Fig. 2 a, c)
train experiment=table2_lm layerdrop.p=0 role=baseline "${SELECT[@]}" "${@}"
train experiment=table2_lm layerdrop.p=0.2 "${LAYERDROP_ROW[@]}" role=layerdrop "${SELECT[@]}" "${@}"
# row 3: the deeper LayerDrop model (full depth only)
train experiment=table2_lm_deep "${LAYERDROP_ROW[@]}" role=deep_layerdrop prune.strategies=[] "${SELECT[@]}" "${@}"
# Figure 2 (b): models of smaller depth trained from scratch, without LayerDrop (full depth only)
train experiment=table2_lm layerdrop.p=0 model.n_layers="$SCRATCH" role=scratch prune.strategies=[] "${SELECT[@]}" "${@}"

# Beyond the paper (ours): the baseline trained for the FLOPs of the LayerDrop run (fewer steps, its own
# full schedule), for the equal-compute comparison
EQUAL=$(equal_steps 0.2 experiment=table2_lm scale="$SCALE" "$@")
train experiment=table2_lm layerdrop.p=0 trainer.max_steps="$EQUAL" role=equal_compute prune.strategies=[] "${SELECT[@]}" "${@}"

report table2
