"""Does a masked LM read its context, and its word order? Scores a pretraining run's masked tokens three
ways on the same fixed masks: with the context as it is, with the unmasked context shuffled within each
block (the same words, no order), and with every other position masked too (no context at all); beside
the corpus' unigram perplexity (train counts, add-one). An encoder that predicts as well from shuffled
context as from the real one has learnt a bag of words, not a language model.

    python -m layerdrop.metrics.context runs/mlm/<key> [--split valid] [--batches 20]

Writes ``context.json`` in the run folder (read by ``python -m layerdrop.report regime_mlm``); evaluation
only: it changes no weights and no run key.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from layerdrop.lit.mlm import EVAL_MASK_SEED, mask_tokens
from layerdrop.metrics.probe import split_batches
from layerdrop.models.checkpoint import load_model
from layerdrop.utils.runs import default_store, write_record

MODES = ("intact", "shuffled", "no_context")


def corrupt(inputs: torch.Tensor, target: torch.Tensor, mode: str, mask_id: int,
            generator: torch.Generator) -> torch.Tensor:
    """The masked inputs with their context kept (``intact``), permuted within each row at the unmasked
    positions (``shuffled``: the scored positions keep their input), or replaced by ``<mask>``
    (``no_context``)."""
    if mode == "intact":
        return inputs
    if mode == "no_context":
        return torch.full_like(inputs, mask_id)
    if mode != "shuffled":
        raise ValueError(f"mode={mode!r}: must be one of {', '.join(MODES)}")
    out = inputs.clone()
    for row in range(inputs.size(0)):
        free = (target[row] == -100).nonzero().squeeze(1)
        out[row, free] = inputs[row, free[torch.randperm(len(free), generator=generator)]]
    return out


@torch.no_grad()
def context_ppl(model: torch.nn.Module, batches, mask_id: int) -> dict[str, float]:
    """Masked-token perplexity per mode over ``batches`` (each a (B,T) tensor), fixed masks per batch."""
    model.eval()
    sums = dict.fromkeys(MODES, 0.0)
    count = 0
    for k, tokens in enumerate(batches):
        g = torch.Generator().manual_seed(EVAL_MASK_SEED + k)
        inputs, target = mask_tokens(tokens, mask_id=mask_id, n_random=mask_id, generator=g,
                                     pad_id=model.config.pad_id)
        for mode in MODES:
            x = corrupt(inputs, target, mode, mask_id, torch.Generator().manual_seed(k))
            sums[mode] += model.mlm_nll(model(x), target).sum().item()
        count += int((target != -100).sum())
    return {mode: math.exp(total / count) for mode, total in sums.items()} | {"masked_tokens": count}


def unigram_ppl(train: np.ndarray, tokens: np.ndarray, vocab: int) -> float:
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    return float(math.exp(-np.log(counts[tokens] / counts.sum()).mean()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished masked-LM run folder (runs/mlm/<key>)")
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--data-dir", default=None, help="default: the run's data_dir, or LAYERDROP_DATA_DIR")
    parser.add_argument("--records-dir", type=Path, default=default_store(),
                        help="the record store that keeps a copy of context.json (paths.records_dir)")
    args = parser.parse_args(argv)
    record = json.loads((args.run / "metrics.json").read_text())
    if record.get("task") != "mlm":
        raise ValueError(f"{args.run}: task {record.get('task')!r}, not a masked-LM run")
    dm, batches = split_batches(record, args.split, args.batches, args.data_dir)
    batches = [b["input"] for b in batches]
    model, _ = load_model(args.run / "model.pt")
    result = context_ppl(model, batches, mask_id=model.config.vocab_size - 1)
    corpus = dm.corpus_dir
    result["unigram"] = unigram_ppl(np.load(corpus / "train.npy"), torch.cat(batches).flatten().numpy(),
                                    model.config.vocab_size - 1)
    result.update(split=args.split, batches=len(batches))
    write_record(args.run, args.records_dir, result, "context.json")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
