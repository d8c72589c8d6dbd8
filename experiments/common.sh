# Shared by the experiment scripts: the scale, depths that depend on it, and the sweep command.
SCALE=${SCALE:-cpu}
case "$SCALE" in
  cpu)   HALF=3 ;;    # the cpu LM has 6 layers
  paper) HALF=8 ;;    # the paper LM has 16
  *) echo "SCALE must be cpu or paper, got '$SCALE'" >&2; exit 2 ;;
esac
# A sweep of runs: one Hydra multirun when every run is single-process (cpu), one torchrun per run that
# needs several GPUs (paper), never a sweep inside the ranks (see src/layerdrop/launch.py).
# A script that adds its own overrides to every run redefines train() on top of launch().
launch() { python -m layerdrop.launch scale="$SCALE" "$@"; }
train() { launch "$@"; }
# The LayerDrop rows' own regularisation, picked on valid as the baseline's dropout was (fairseq's tip:
# about 0.1 less dropout once LayerDrop is on). cpu LM, LayerDrop 0.2, seed 1, 5,000 steps
# (results/regime_lm_map/): dropout 0.0 gives valid ppl 102.6, dropout 0.1 gives 104.7.
# Translation picked its own on valid (make tune-mt-layerdrop, results/regime_mt/): 0.1, the baseline's, so
# experiments/table1_mt.sh does not use this.
LAYERDROP_ROW=()
if [ "$SCALE" = cpu ]; then LAYERDROP_ROW=(model.dropout=0.0); fi
# The cpu regime: every run reports its best-on-valid checkpoint and stops after 6 validations without
# a better one (the paper's runs report their final weights). 6 as in the LM regime map, whose runs are
# then Table 2's rows (same settings, same run). Runs of different artefacts with the same settings are
# one run in the cache and the record store.
SELECT=()
if [ "$SCALE" = cpu ]; then SELECT=(select=best early_stop_patience=6); fi
# Runs whose weights a later step reads (fine-tuning, a probe, a distilled student's teacher): from a fresh
# clone the record store (records/) holds their records but not their weights, so they train again.
# `make report-<artefact>` regenerates an artefact from the store alone.
WEIGHTS=(need_weights=true)
# Fine-tuning a pretrained encoder (python -m layerdrop.classify): every stand-in, a learning-rate sweep
# (Hydra multirun; the reports keep the best valid point of each sweep). The paper sweeps lr {1e-5, 2e-5,
# 3e-5} x batch {16, 32} at RoBERTa's size; the cpu encoders take larger rates.
DATASETS=vitaminc,bibles_mrpc,foldoc_qnli,rotten_tomatoes   # the MNLI, MRPC, QNLI and SST-2 stand-ins
case "$SCALE" in
  cpu)   LRS=1e-4,3e-4,1e-3; QUARTER=2; HALF_ENC=4 ;;   # the cpu encoder has 8 layers
  paper) LRS=1e-5,2e-5,3e-5; QUARTER=3; HALF_ENC=6 ;;   # RoBERTa base has 12
esac
classify() { python -m layerdrop.classify -m scale="$SCALE" classify.dataset="$DATASETS" classify.lr="$LRS" "$@"; }
report() { python -m layerdrop.report "$1" --scale "$SCALE"; }
# The steps that give a baseline the training FLOPs of a LayerDrop run at rate $1 (reads the data's vocabulary);
# sweep values (seed=1,2,3) are left out: they do not change the FLOPs
equal_steps() {
  local one=(); for a in "$@"; do [[ $a == *,* ]] || one+=("$a"); done
  python -m layerdrop.flops equal-steps "${one[@]}" | tail -1
}
# Fine-tuning a trained LM, pruned or not (python -m layerdrop.finetune, Table 8)
finetune() { python -m layerdrop.finetune -m scale="$SCALE" "$@"; }
# Does a pretrained masked LM read word order? (context.json beside the run; python -m layerdrop.metrics.context)
context() { python -m layerdrop.metrics.context "$(python -m layerdrop.runkey --dir scale="$SCALE" "$@")"; }
# Which layers a trained seq2seq model uses (layer_use.json beside the run; python -m layerdrop.metrics.layer_use);
# one thread, so it slows a training beside it less; a run already probed is not probed again (a probe from
# before the encoder's output spread was measured only gains that, in seconds)
layer_use() {
  local run; run=$(python -m layerdrop.runkey --dir scale="$SCALE" "$@")
  if [ ! -f "$run/layer_use.json" ]; then OMP_NUM_THREADS=1 python -m layerdrop.metrics.layer_use "$run"
  elif ! grep -q '"encoder_spread"' "$run/layer_use.json"; then
    OMP_NUM_THREADS=1 python -m layerdrop.metrics.layer_use "$run" --spread-only
  fi
}
# LAYERDROP_DRY=1: print each command instead of running it (tests compose every run a script makes)
if [ "${LAYERDROP_DRY:-0}" = 1 ]; then
  launch() { echo "train scale=$SCALE $*"; }   # train() and the scripts' own train() go through it
  classify() { echo "classify scale=$SCALE classify.dataset=$DATASETS classify.lr=$LRS $*"; }
  report() { echo "report $1"; }
  finetune() { echo "finetune scale=$SCALE $*"; }
  # no data read in a dry run, unless LAYERDROP_DRY_FLOPS=1 (python -m layerdrop.backlog: the steps decide run keys)
  if [ "${LAYERDROP_DRY_FLOPS:-0}" != 1 ]; then equal_steps() { echo "EQUAL_FLOPS_STEPS"; }; fi
  context() { echo "context scale=$SCALE $*"; }
  layer_use() { echo "layer_use scale=$SCALE $*"; }
fi
