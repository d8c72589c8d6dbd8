#!/usr/bin/env bash
# The cpu pretraining regime probe (the pretraining issue's first question): does masked-LM pretraining on
# the English text from packages (news, An Anarchist FAQ, Debian descriptions; data=mlm_cpu_news: the news
# alone) transfer to the classification stand-ins at this scale at all? The 8-layer encoder with
# LayerDrop 0.2 (Table 4's LayerDrop row, shared with it through the run cache) fine-tuned on every
# stand-in, against the same architecture fine-tuned from a fresh initialisation (classify.init=scratch)
# by the same recipe, beside each stand-in's majority class. One learning rate (LR, default 3e-4) for
# both rows: a probe, not a table. Both classification heads (POOL, default first,mean: RoBERTa's first
# position, and the mean of the non-padding positions), each its own rows on the page.
#   [LR=3e-4,1e-3] [POOL=mean] bash experiments/tune_pretrain.sh [extra Hydra overrides]
set -euo pipefail
source "$(dirname "$0")/common.sh"
LRS=${LR:-3e-4}
POOLS=${POOL:-first,mean}
train "${WEIGHTS[@]}" experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" "$@"
context experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" "$@"
classify experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" classify.init=pretrained classify.pool="$POOLS" artefact=regime_mlm "$@"
classify experiment=pretrain_mlm layerdrop.p=0.2 "${SELECT[@]}" classify.init=scratch classify.pool="$POOLS" artefact=regime_mlm "$@"
report regime_mlm
