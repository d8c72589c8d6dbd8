"""Speed of the default cpu translation model: training target tokens/s at LayerDrop 0 and 0.5, and
beam-search sentences/s with the full decoder and with the decoder pruned every-other.

    python -m layerdrop.bench_mt [--steps 20] [--sentences 400] [--model runs/mt/<key>/model.pt]

Training is timed on real batches of the offline corpus (forward + backward + optimizer step, bf16
autocast as configured). Generation uses the trained Table 1 LayerDrop model from the run cache
when it exists (else a freshly initialised one, said so in the output) on the first test sentences,
with the paper's beam 8 and length penalty 0.6, in fp32 as in evaluation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from layerdrop.config import load_config
from layerdrop.lit.mt import label_smoothed_nll
from layerdrop.models.checkpoint import load_model
from layerdrop.models.generate import beam_search
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq
from layerdrop.report.collect import write_text
from layerdrop.train import model_config
from layerdrop.utils import runs


def time_training(cfg: Seq2SeqConfig, batches: list[dict], bf16: bool) -> dict:
    torch.manual_seed(0)
    model = TransformerSeq2Seq(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times, tokens, kept = [], 0, []
    for i, b in enumerate(batches):
        for m in model.modules():
            if hasattr(m, "set_draw"):
                m.set_draw(i, seed=1)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model.logits(model(b["src"], b["tgt_in"]))
        loss, _, n = label_smoothed_nll(logits.reshape(-1, logits.size(-1)), b["tgt_out"].reshape(-1), 0.1)
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:  # warm-up steps are not timed
            times.append(time.perf_counter() - start)
            tokens += int(n)
            kept.append(sum(model.encoder.last_keep) + sum(model.decoder.last_keep))
    return {"step_s": statistics.mean(times), "target_tokens_per_s": tokens / sum(times),
            "mean_kept_layers": statistics.mean(kept)}


def time_generation(model: TransformerSeq2Seq, batches: list[dict], bos: int, eos: int, gen: dict) -> dict:
    model.eval()
    sentences = out_tokens = 0
    start = time.perf_counter()
    for b in batches:
        hyps = beam_search(model, b["src"], bos=bos, eos=eos, **gen)
        sentences += len(hyps)
        out_tokens += sum(len(h[0].tokens) + 1 for h in hyps)
    seconds = time.perf_counter() - start
    return {"sentences_per_s": sentences / seconds, "output_tokens_per_s": out_tokens / seconds,
            "mean_output_tokens": out_tokens / sentences, "seconds": seconds, "sentences": sentences}


FIXED_STEPS = 20  # output tokens per sentence in the equal-work comparison
# equal work, 6 decoder layers, before the batched beam search (results/bench/bench_mt.md at 5102d75;
# equal work costs the same whatever the weights); issue #9 asks for at least twice as many
BEAM_BASELINE, BEAM_TARGET = 49.0, 2.0


def sample_batches(dm, count: int, batch_sentences: int = 64, seed: int = 0) -> list[dict]:
    """A seeded random sample of test pairs (all lengths, unlike the first length-sorted batches),
    in batches of similar length."""
    from layerdrop.data.mt import collate

    data = dm.datasets["test"]
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(data), generator=g)[:count].tolist()
    picked.sort(key=lambda k: int(data.src_lens[k]))
    items = [data[k] for k in picked]
    return [collate(items[i : i + batch_sentences], dm.pad_id, dm.bos_id, dm.eos_id)
            for i in range(0, len(items), batch_sentences)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per rate")
    parser.add_argument("--sentences", type=int, default=400, help="test sentences translated per depth")
    parser.add_argument("--repeats", type=int, default=3, help="beam-search timings per depth (the best is kept)")
    parser.add_argument("--model", type=Path, default=None, help="a trained model file (default: the run cache's)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("overrides", nargs="*", default=["experiment=table1_mt"])
    args = parser.parse_args(argv)

    from hydra.utils import instantiate

    cfg = load_config(args.overrides)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    train_batches = list(itertools.islice(iter(dm.train_dataloader()), args.steps + 3))
    bf16 = cfg.trainer.precision.startswith("bf16")
    base = model_config(cfg)
    train_rows = []
    for p in (0.0, 0.5):
        row = time_training(Seq2SeqConfig(**{**base, "encoder_layerdrop": p, "decoder_layerdrop": p}), train_batches,
                            bf16)
        train_rows.append({"p": p, **row})
    for row in train_rows:
        row["speedup_vs_p0"] = row["target_tokens_per_s"] / train_rows[0]["target_tokens_per_s"]

    path = args.model or runs.run_dir(cfg) / "model.pt"
    if path.exists():
        model, _ = load_model(path)
        source = f"trained model {path}"
    else:
        model, source = TransformerSeq2Seq(Seq2SeqConfig(**base)).eval(), "freshly initialised model (no trained run found)"
    test_batches = sample_batches(dm, args.sentences)
    gen = {k: cfg.generate[k] for k in ("beam", "lenpen", "max_len_a", "max_len_b")}
    fixed = {**gen, "max_len_a": 0.0, "max_len_b": FIXED_STEPS, "min_len": FIXED_STEPS}
    n = model.config.decoder_layers
    depths = {d: model if d == n else prune_model(model, {"decoder": layers_to_keep("every_other", n, d)})
              for d in (n, n // 2, 1)}
    best: dict = {}
    with torch.inference_mode():
        for _ in range(args.repeats):  # depths and modes interleaved, so a busy spell hits all of them
            for depth, sub in depths.items():
                for mode, settings in (("free", gen), ("fixed", fixed)):
                    t = time_generation(sub, test_batches, dm.bos_id, dm.eos_id, settings)
                    if (depth, mode) not in best or t["seconds"] < best[depth, mode]["seconds"]:
                        best[depth, mode] = t
    gen_rows = [{"decoder_layers": d, **best[d, "free"], "fixed_sentences_per_s": best[d, "fixed"]["sentences_per_s"]}
                for d in depths]
    for row in gen_rows:
        row["speedup_vs_full"] = row["sentences_per_s"] / gen_rows[0]["sentences_per_s"]
        row["fixed_speedup_vs_full"] = row["fixed_sentences_per_s"] / gen_rows[0]["fixed_sentences_per_s"]
    result = {"config": args.overrides, "precision": cfg.trainer.precision, "machine": runs.machine_info(),
              "train": train_rows, "generate": gen_rows, "generate_settings": gen, "model": source,
              "encoder_layers": model.config.encoder_layers, "max_tokens": cfg.data.max_tokens,
              "generate_repeats": args.repeats}
    report = render(result)
    print(report)
    write_text(args.out / "bench_mt.json", json.dumps(result, indent=2, default=str) + "\n")
    write_text(args.out / "bench_mt.md", report + "\n")


def render(r: dict) -> str:
    g = r["generate_settings"]
    lines = [f"# Benchmark: default cpu translation model ({' '.join(r['config'])})", "",
             f"Machine: {r['machine']['cpus']} CPUs, torch {r['machine']['torch']}, {r['machine']['threads']} "
             f"threads. Training in {r['precision']}, batches of up to {r['max_tokens']} padded tokens from the "
             "offline corpus.", "",
             "| LayerDrop p (both sides) | train target tokens/s | speed-up vs p=0 | mean kept layers (enc+dec) |",
             "|---|---|---|---|"]
    for t in r["train"]:
        lines.append(f"| {t['p']} | {t['target_tokens_per_s']:,.0f} | {t['speedup_vs_p0']:.2f}x | "
                     f"{t['mean_kept_layers']:.1f} |")
    lines += ["", f"Beam search (beam {g['beam']}, lenpen {g['lenpen']}, fp32) on a seeded random sample of "
              f"{r['generate'][0]['sentences']} test sentences, {r['model']}; the encoder keeps all "
              f"{r['encoder_layers']} layers. *Equal work*: every sentence decodes exactly {FIXED_STEPS} tokens "
              "(`min_len` = max length), so only the decoder's depth differs. *Free*: the normal search, where "
              "each model stops when it has finished 8 hypotheses, so output lengths differ too.", "",
              "| decoder layers | equal work: sentences/s | speed-up | free: sentences/s | speed-up | "
              "free: mean output tokens |", "|---|---|---|---|---|---|"]
    for x in r["generate"]:
        lines.append(f"| {x['decoder_layers']} | {x['fixed_sentences_per_s']:.1f} | {x['fixed_speedup_vs_full']:.2f}x | "
                     f"{x['sentences_per_s']:.1f} | {x['speedup_vs_full']:.2f}x | {x['mean_output_tokens']:.1f} |")
    full, half = r["generate"][0], r["generate"][1]
    speedup = full["fixed_sentences_per_s"] / BEAM_BASELINE
    lines += ["", f"Best of {r.get('generate_repeats', 1)} timings per cell.", "", "- beam search, "
              f"{full['decoder_layers']} decoder layers, equal work: **{speedup:.2f}x** the {BEAM_BASELINE} "
              f"sentences/s measured before the batched search (target >= {BEAM_TARGET}x: "
              f"{'met' if speedup >= BEAM_TARGET else 'missed'}; a comparison across runs on a shared machine)",
              f"- a decoder pruned to {half['decoder_layers']} layers decodes **{half['fixed_speedup_vs_full']:.2f}x** "
              f"as many sentences/s as the full one for the same output length; in the free search it is "
              f"{half['speedup_vs_full']:.2f}x, because the pruned (untuned) model's hypotheses differ in length"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
