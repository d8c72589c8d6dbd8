"""Prune a trained model file or Lightning checkpoint to fewer layers, without fine-tuning.

    python -m layerdrop.prune runs/lm/<key>/model.pt --strategy every_other --depth 3 --out lm_3l.pt
    python -m layerdrop.prune model.pt --strategy explicit --layers 0 2 5 --out lm_3l.pt

The output is an ordinary model file whose config has fewer layers: it reloads with
``layerdrop.models.checkpoint.load_model`` and knows nothing of the pruning (fairseq#1403).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from layerdrop.evaluate import learned_rates
from layerdrop.models.checkpoint import load_model, save_model
from layerdrop.models.pruning import STRATEGIES, count_parameters, layers_to_keep, prune_model

log = logging.getLogger("layerdrop")


def prune_file(src: Path, out: Path, strategy: str, depth: int | None = None, layers: list[int] | None = None) -> list[int]:
    model, meta = load_model(src)
    keep = layers_to_keep(strategy, model.config.n_layers, depth, layers, rates=learned_rates(model))
    pruned = prune_model(model, {"decoder": keep})
    before, after = count_parameters(model), count_parameters(pruned)
    log.info("pruned %s: layers %s of %d kept, %s -> %s parameters", src, keep, model.config.n_layers,
             f"{before:,}", f"{after:,}")
    save_model(out, pruned, meta={**meta, "pruned_from": str(src), "kept_layers": keep,
                                  "n_params_before": before, "n_params": after})
    return keep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.prune", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a layerdrop model file (model.pt) or Lightning .ckpt")
    parser.add_argument("--strategy", default="every_other", choices=STRATEGIES)
    parser.add_argument("--depth", type=int, help="layers to keep")
    parser.add_argument("--layers", type=int, nargs="+", help="the kept layers, for --strategy explicit")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prune_file(args.model, args.out, args.strategy, args.depth, args.layers)


if __name__ == "__main__":
    main()
