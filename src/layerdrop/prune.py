"""Prune a trained model file or Lightning checkpoint to fewer layers, without fine-tuning.

    python -m layerdrop.prune runs/lm/<key>/model.pt --strategy every_other --depth 3 --out lm_3l.pt
    python -m layerdrop.prune model.pt --strategy explicit --layers 0 2 5 --out lm_3l.pt
    python -m layerdrop.prune runs/mt/<key>/model.pt --stack decoder --depth 3 --out mt_dec3.pt
    python -m layerdrop.prune mt_dec3.pt --stack encoder --depth 3 --out mt_enc3_dec3.pt

The output is an ordinary model file whose config has fewer layers: it reloads with
``layerdrop.models.checkpoint.load_model`` and knows nothing of the pruning (fairseq#1403).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from layerdrop.evaluate import learned_rates, stack_size
from layerdrop.models.checkpoint import load_model, save_model
from layerdrop.models.pruning import STRATEGIES, count_parameters, layers_to_keep, prune_model

log = logging.getLogger("layerdrop")


def prune_file(src: Path, out: Path, strategy: str, depth: int | None = None, layers: list[int] | None = None,
               stack: str = "decoder") -> list[int]:
    """Keep ``depth`` (or the listed) layers of one stack; every other stack keeps all its layers."""
    model, meta = load_model(src)
    n = stack_size(model, stack)
    rates = learned_rates(model, stack) if strategy == "data_driven" else None
    keep = layers_to_keep(strategy, n, depth, layers, rates=rates)
    pruned = prune_model(model, {stack: keep})
    before, after = count_parameters(model), count_parameters(pruned)
    log.info("pruned %s: %s layers %s of %d kept, %s -> %s parameters", src, stack, keep, n, f"{before:,}",
             f"{after:,}")
    save_model(out, pruned, meta={**meta, "pruned_from": str(src), "stack": stack, "kept_layers": keep,
                                  "n_params_before": before, "n_params": after})
    return keep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.prune", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a layerdrop model file (model.pt) or Lightning .ckpt")
    parser.add_argument("--strategy", default="every_other", choices=STRATEGIES)
    parser.add_argument("--depth", type=int, help="layers to keep")
    parser.add_argument("--layers", type=int, nargs="+", help="the kept layers, for --strategy explicit")
    parser.add_argument("--stack", default="decoder", help="the stack to prune: decoder (LM, MT) or encoder (MT)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prune_file(args.model, args.out, args.strategy, args.depth, args.layers, args.stack)


if __name__ == "__main__":
    main()
