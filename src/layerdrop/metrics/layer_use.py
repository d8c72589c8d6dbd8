"""Which layers a trained sequence-to-sequence model uses, and how much it reads its source: teacher-forced
perplexity on fixed valid batches at full depth, with each layer of each stack removed (the rest run as
trained, no fine-tuning), with each layer kept alone, and with every source swapped for another sentence's
in the same batch. A layer whose removal changes nothing does no work the model needs: a stack whose layers
beyond the first all score like that has, in effect, one layer. Also the spread of the encoder's output over
the real source positions (``encoder_spread``): near 0, the encoder maps every input to one vector and the
decoder can read nothing from it.

    python -m layerdrop.metrics.layer_use runs/<mt|sum|qa>/<key> [--split valid] [--batches 60] [--spread-only]

Writes ``layer_use.json`` in the run folder and its copy in the record store (read by ``python -m
layerdrop.report.layer_use``); evaluation only: it changes no weights and no run key.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from layerdrop.lit.seq2seq import IGNORE, label_smoothed_nll
from layerdrop.metrics.probe import split_batches
from layerdrop.models.checkpoint import load_model
from layerdrop.models.pruning import prune_model
from layerdrop.utils.runs import default_store, write_record

SEQ2SEQ_TASKS = ("mt", "sum", "qa")


@torch.no_grad()
def perplexity(model: torch.nn.Module, batches: list[dict]) -> float:
    """Teacher-forced target perplexity (no label smoothing) of ``model`` in eval mode over ``batches``."""
    model.eval()
    nll = tokens = 0.0
    for b in batches:
        logits = model.logits(model(b["src"], b["tgt_in"])).float()
        _, total, n = label_smoothed_nll(logits.reshape(-1, logits.size(-1)), b["tgt_out"].reshape(-1), 0.0)
        nll, tokens = nll + total.item(), tokens + n.item()
    return math.exp(nll / tokens)


def swap_sources(batches: list[dict]) -> list[dict]:
    """Each batch with its sources rolled by one row: every target is read against another sentence's source
    (a one-row batch keeps its own, so it is left out)."""
    return [dict(b, src=b["src"].roll(1, 0)) for b in batches if b["src"].size(0) > 1]


@torch.no_grad()
def encoder_spread(model: torch.nn.Module, batches: list[dict]) -> float:
    """How much the encoder's output varies over the real (non-padding) source positions of ``batches``: the
    mean over dimensions of the standard deviation across positions, over the output's root mean square.
    About 1 for an encoder whose output moves with its input; near 0 when it outputs one constant vector."""
    model.eval()
    states = []
    for b in batches:
        memory, pad = model.encode(b["src"])
        states.append(memory[~pad].float())
    h = torch.cat(states)
    return (h.std(0).mean() / h.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def layer_use(model: torch.nn.Module, batches: list[dict]) -> dict:
    """{"full": ppl, "wrong_source": ppl, "stacks": {name: {"without": [ppl per removed layer], "only": [ppl
    with that layer alone]}}} for a model with ``stacks`` (``TransformerSeq2Seq``)."""
    out = {"full": perplexity(model, batches), "wrong_source": perplexity(model, swap_sources(batches)),
           "encoder_spread": encoder_spread(model, batches), "stacks": {}}
    for name, (_, depth_field, _) in model.stacks.items():
        n = getattr(model.config, depth_field)
        out["stacks"][name] = {
            "without": [perplexity(prune_model(model, {name: [j for j in range(n) if j != i]}), batches)
                        if n > 1 else None for i in range(n)],
            "only": [perplexity(prune_model(model, {name: [i]}), batches) for i in range(n)],
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished translation, summarisation or QA run folder")
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--data-dir", default=None, help="default: LAYERDROP_DATA_DIR, else the run's data_dir")
    parser.add_argument("--spread-only", action="store_true",
                        help="add encoder_spread to the run's existing layer_use.json (same split and batches) "
                             "without probing the layers again: seconds, not minutes")
    parser.add_argument("--records-dir", type=Path, default=default_store(),
                        help="the record store that keeps a copy of layer_use.json (paths.records_dir)")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error(f"--batches must be at least 1, got {args.batches}")
    record = json.loads((args.run / "metrics.json").read_text())
    if record.get("task") not in SEQ2SEQ_TASKS:
        raise ValueError(f"{args.run}: task {record.get('task')!r}; layer_use probes {', '.join(SEQ2SEQ_TASKS)} runs")
    weights = args.run / "model.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing: the run's weights are needed (train it with need_weights=true)")
    earlier = args.run / "layer_use.json"
    if args.spread_only and not earlier.exists():
        raise FileNotFoundError(f"{earlier} is missing: --spread-only adds to a finished probe; run it without the flag")
    _, batches = split_batches(record, args.split, args.batches, args.data_dir)
    model, _ = load_model(weights)
    if args.spread_only:
        result = json.loads(earlier.read_text())
        if (result.get("split"), result.get("batches")) != (args.split, len(batches)):
            raise ValueError(f"{earlier} probed split {result.get('split')!r} on {result.get('batches')} batches; "
                             f"--spread-only was asked for {args.split!r} on {len(batches)}: pass the same")
        result["encoder_spread"] = encoder_spread(model, batches)
    else:
        result = layer_use(model, batches)
        result.update(split=args.split, batches=len(batches),
                      target_tokens=int(sum((b["tgt_out"] != IGNORE).sum() for b in batches)))
    write_record(args.run, args.records_dir, result, "layer_use.json")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
