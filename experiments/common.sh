# Shared by the experiment scripts: the scale, depths that depend on it, and the sweep command.
SCALE=${SCALE:-cpu}
case "$SCALE" in
  cpu)   HALF=3 ;;    # the cpu LM has 6 layers
  paper) HALF=8 ;;    # the paper LM has 16
  *) echo "SCALE must be cpu or paper, got '$SCALE'" >&2; exit 2 ;;
esac
# A sweep of runs: one Hydra multirun when every run is single-process (cpu), one torchrun per run that
# needs several GPUs (paper), never a sweep inside the ranks (see src/layerdrop/launch.py).
train() { python -m layerdrop.launch scale="$SCALE" "$@"; }
# The LayerDrop rows' own regularisation, picked on valid as the baseline's dropout was (fairseq's tip:
# about 0.1 less dropout once LayerDrop is on). cpu LM, LayerDrop 0.2, seed 1 (results/regime_lm/):
# dropout 0.0 gives valid ppl 104.7, dropout 0.1 gives 111.0.
LAYERDROP_ROW=()
if [ "$SCALE" = cpu ]; then LAYERDROP_ROW=(model.dropout=0.0); fi
# The cpu regime: every run reports its best-on-valid checkpoint and stops after 3 validations without
# a better one (the paper's runs report their final weights). Runs of different artefacts with the same
# settings are one run in the cache.
SELECT=()
if [ "$SCALE" = cpu ]; then SELECT=(select=best early_stop_patience=3); fi
