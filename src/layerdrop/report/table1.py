"""Table 1 (translation BLEU) and Figure 2's MT panel (BLEU vs kept decoder layers), from run records.

Roles are read off each run's config: the base encoder depth is the shallowest one trained; the
baseline and the LayerDrop model have it and the deepest decoder, at p = 0 and p = ``p_ld``; the
deep-encoder models have a deeper encoder; the from-scratch models have p = 0 and a shallower decoder.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import provenance, read_csv, save_figure, write_csv, write_text  # noqa: E402

COLUMNS = ["run_key", "scale", "encoder_layers", "decoder_layers", "layerdrop_p", "stack", "strategy", "kept_layers",
           "layers", "n_params", "test_bleu", "test_bleu_tok", "test_loss", "test_ppl", "test_sentences",
           "test_sentences_per_s", "beam", "lenpen", "steps", "tokens_seen", "train_wall_s", "train_tokens_per_s",
           "final_train_loss", "averaged_checkpoints", "git_sha", "vocab_size"]


def tidy_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        cfg, train = r["config"], r["train"]
        for e in r["eval"]:
            gen = e.get("generate", {})
            rows.append({
                "run_key": r["run_key"], "scale": r["scale"], "encoder_layers": cfg["model"]["encoder_layers"],
                "decoder_layers": cfg["model"]["decoder_layers"], "layerdrop_p": cfg["layerdrop"]["p"],
                "stack": e.get("stack", "decoder"), "strategy": e["strategy"], "kept_layers": e["depth"],
                "layers": " ".join(map(str, e["layers"])), "n_params": e["n_params"],
                **{k: e.get(k) for k in ("test_bleu", "test_bleu_tok", "test_loss", "test_ppl", "test_sentences",
                                         "test_sentences_per_s")},
                "beam": gen.get("beam"), "lenpen": gen.get("lenpen"), "steps": train["steps"],
                "tokens_seen": train["tokens_seen"], "train_wall_s": train["wall_s"],
                "train_tokens_per_s": train.get("train_tokens_per_s"),
                "final_train_loss": train.get("final", {}).get("train/loss"),
                "averaged_checkpoints": " ".join(map(str, train.get("averaged_checkpoints", []))),
                "git_sha": r.get("git_sha"), "vocab_size": (r.get("data") or {}).get("vocab_size"),
            })
    return sorted(rows, key=lambda x: (x["encoder_layers"], x["decoder_layers"], x["layerdrop_p"], x["stack"],
                                       x["strategy"], x["kept_layers"], x["layers"]))


def full(rows: list[dict], enc: int, dec: int, p: float) -> dict | None:
    match = [r for r in rows if (r["encoder_layers"], r["decoder_layers"], r["layerdrop_p"]) == (enc, dec, p)
             and r["strategy"] == "none"]
    return match[0] if match else None


def decoder_curve(rows: list[dict], enc: int, dec: int, p: float, metric: str = "test_bleu") -> dict[int, float]:
    """kept decoder layers -> test BLEU (or ``metric``), every-other pruning of the decoder, full model included."""
    return {r["kept_layers"]: r[metric] for r in rows
            if (r["encoder_layers"], r["decoder_layers"], r["layerdrop_p"]) == (enc, dec, p)
            and r["stack"] == "decoder" and r["strategy"] in ("every_other", "none")}


def roles(rows: list[dict], p_ld: float) -> dict:
    ld = [r for r in rows if r["layerdrop_p"] == p_ld]
    if not ld:
        raise ValueError(f"no run trained with LayerDrop p={p_ld}: run `make reproduce-table1` first")
    enc = min(r["encoder_layers"] for r in ld)
    dec = max(r["decoder_layers"] for r in ld if r["encoder_layers"] == enc)
    deep = max((r["encoder_layers"] for r in rows), default=enc)
    scratch = sorted({r["decoder_layers"] for r in rows
                      if r["layerdrop_p"] == 0 and r["encoder_layers"] == enc and r["decoder_layers"] < dec})
    return {"enc": enc, "dec": dec, "deep": deep if deep > enc else None, "scratch": scratch}


def diverged(row: dict | None) -> bool:
    """A training that blew up: a non-finite loss, or a test perplexity no better than a uniform guess
    over the vocabulary (an under-trained model that merely translates badly has not diverged)."""
    if row is None:
        return False
    values = [row.get("final_train_loss"), row.get("test_loss")]
    if any(v is None or not math.isfinite(v) for v in values):
        return True
    return row["test_ppl"] >= row["vocab_size"]


def claims(rows: list[dict], p_ld: float) -> list[tuple[str, bool, str]]:
    """(paper claim, held here?, the numbers behind the verdict)."""
    role = roles(rows, p_ld)
    enc, dec, deep = role["enc"], role["dec"], role["deep"]
    base, ld = full(rows, enc, dec, 0.0), full(rows, enc, dec, p_ld)
    deep_base = full(rows, deep, dec, 0.0) if deep else None
    deep_ld = full(rows, deep, dec, p_ld) if deep else None
    out = []
    if base and ld:
        out.append((f"LayerDrop improves the {enc}/{dec} Transformer (paper 29.3 -> 29.6 BLEU)",
                    ld["test_bleu"] > base["test_bleu"], f"{base['test_bleu']:.2f} -> {ld['test_bleu']:.2f}"))
    if deep_ld and ld:
        best_other = max(x["test_bleu"] for x in (ld, base, deep_base) if x)
        out.append((f"the {deep}-encoder LayerDrop model is the best (paper 30.2)", deep_ld["test_bleu"] > best_other,
                    f"{deep_ld['test_bleu']:.2f} vs best other {best_other:.2f}"))
    if deep_base:
        out.append((f"without LayerDrop the {deep}-encoder model diverges (paper, text)", diverged(deep_base),
                    f"final train loss {deep_base['final_train_loss']:.3f}, test BLEU {deep_base['test_bleu']:.2f}"
                    + (f" vs {deep_ld['test_bleu']:.2f} with LayerDrop" if deep_ld else "")))
    ld_curve, base_curve = decoder_curve(rows, enc, dec, p_ld), decoder_curve(rows, enc, dec, 0.0)
    shared = sorted(d for d in ld_curve if d in base_curve and d < dec)
    if shared:
        wins = [d for d in shared if ld_curve[d] > base_curve[d]]
        half = dec // 2
        out.append(("decoder pruned without fine-tuning, the LayerDrop model beats the pruned baseline at every depth",
                    len(wins) == len(shared),
                    f"wins at {len(wins)}/{len(shared)} depths; at {half} decoder layers "
                    f"{ld_curve.get(half, float('nan')):.2f} vs {base_curve.get(half, float('nan')):.2f}"))
    scratch = {d: full(rows, enc, d, 0.0)["test_bleu"] for d in role["scratch"]}
    if scratch:
        wins = [d for d in scratch if d in ld_curve and ld_curve[d] > scratch[d]]
        detail = "; ".join(f"{d} decoder layers: {ld_curve.get(d, float('nan')):.2f} vs {s:.2f}"
                           for d, s in scratch.items())
        out.append(("the pruned LayerDrop model beats models trained from scratch at that decoder depth",
                    len(wins) == len(scratch), detail))
    return out


def caption(records: list[dict], rows: list[dict], scale: str) -> str:
    run = provenance(records)
    splits = run["splits"]
    split_text = ", ".join(f"{k} {v.get('pairs', '?'):,} pairs" for k, v in splits.items() if isinstance(v, dict))
    gen = next((r for r in rows if r["beam"] is not None), {})
    return (f"Scale `{scale}`; data: {run['source']} ({split_text}); joint BPE {run['data'].get('vocab_size', '?')}; "
            f"{len(records)} training runs of {run['steps']} steps, {run['tokens']:,} target tokens in all; "
            f"machine: {run['machine']}; training wall time {run['wall_min']:.1f} min (evaluation not included). "
            f"Test BLEU by beam search (beam {gen.get('beam', '?')}, length penalty {gen.get('lenpen', '?')}) on "
            f"{gen.get('test_sentences', '?')} of the {(splits.get('test') or {}).get('pairs', '?')} test pairs "
            "(a fixed seeded subset when fewer; perplexity covers all), with averaged checkpoints; `BLEU` is sacrebleu on detokenized text, `tok. BLEU` the paper's "
            "tokenized, compound-split variant (13a tokens; see README).")


def table_markdown(rows: list[dict], records: list[dict], paper: list[dict], scale: str, p_ld: float) -> str:
    role = roles(rows, p_ld)
    enc, dec, deep = role["enc"], role["dec"], role["deep"]
    paper_by_row = {p["row"]: p for p in paper}
    lines = ["# Table 1: English-German translation with LayerDrop", "", caption(records, rows, scale), "",
             "| Model | Enc | Dec | Params | BLEU (ours) | tok. BLEU (ours) | test ppl (ours) | Paper: enc/dec | "
             "Paper: BLEU |", "|---|---|---|---|---|---|---|---|---|"]
    spec = [("baseline", enc, 0.0, "Transformer"), ("layerdrop", enc, p_ld, f"+ LayerDrop {p_ld}"),
            ("deep_baseline", deep, 0.0, "Transformer, deep encoder"),
            ("deep_layerdrop", deep, p_ld, f"+ LayerDrop {p_ld}, deep encoder")]
    for key, e, p, name in spec:
        r = full(rows, e, dec, p) if e else None
        pp = paper_by_row[key]
        ours = (f"{r['n_params'] / 1e6:.2f}M | {r['test_bleu']:.2f} | {r['test_bleu_tok']:.2f} | {r['test_ppl']:.2f}"
                if r else "not run | - | - | -")
        if r and diverged(r):
            ours += " (diverged)"
        lines.append(f"| {name} | {e or '-'} | {dec} | {ours} | {pp['encoder_layers']}/{pp['decoder_layers']} | "
                     f"{pp['test_bleu']} |")
    lines += ["", "Paper numbers: Fan et al. 2020, Table 1 (WMT16 en-de, newstest2014, tokenized compound-split "
              "BLEU), for comparison only; the paper's other rows: "
              + "; ".join(f"{p['model']} {p['test_bleu']}" for p in paper if p["row"] in ("vaswani", "dynamicconv"))
              + ".", "", "## Did the paper's claims hold at this scale?", ""]
    for claim, held, detail in claims(rows, p_ld):
        lines.append(f"- **{'held' if held else 'did not hold'}**: {claim} ({detail}).")
    best = max((r["test_bleu"] for r in rows if r["strategy"] == "none"), default=0.0)
    if best < 10:
        steps = "/".join(map(str, sorted({r["steps"] for r in rows})))
        lines += ["", f"Caution: the best full model scores {best:.2f} BLEU. After {steps} training steps these models "
                  "barely translate, so BLEU differences of a few tenths are within noise and the verdicts above "
                  "rest on them; the teacher-forced perplexity columns below rank the models more reliably at "
                  "this scale."]
    lines += ["", "## Figure 2, MT panel: test BLEU (and teacher-forced test perplexity) by kept decoder layers",
              "", "The encoder keeps all its layers.", "",
              "| kept decoder layers | LayerDrop, pruned | baseline, pruned | trained from scratch | "
              "ppl: LayerDrop | ppl: baseline | ppl: scratch |", "|---|---|---|---|---|---|---|"]
    curves = []
    for metric in ("test_bleu", "test_ppl"):
        scratch = {d: full(rows, enc, d, 0.0)[metric] for d in role["scratch"]}
        curves += [decoder_curve(rows, enc, dec, p_ld, metric), decoder_curve(rows, enc, dec, 0.0, metric), scratch]
    for d in sorted(set().union(*curves)):
        cells = [f"{c[d]:.2f}" if d in c else "-" for c in curves]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "Figure: `figure2_mt.png`; raw numbers: `raw.csv` (every run x pruned depth).", ""]
    return "\n".join(lines)


def figure(rows: list[dict], p_ld: float, path: Path, scale: str) -> None:
    role = roles(rows, p_ld)
    enc, dec = role["enc"], role["dec"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for p, label, style in [(p_ld, f"LayerDrop p={p_ld}, pruned every-other", "o-"),
                            (0.0, "baseline (p=0), pruned every-other", "s--")]:
        curve = sorted(decoder_curve(rows, enc, dec, p).items())
        if curve:
            ax.plot(*zip(*curve), style, label=label)
    scratch = [(d, full(rows, enc, d, 0.0)["test_bleu"]) for d in role["scratch"]]
    base = full(rows, enc, dec, 0.0)
    if base:
        scratch.append((dec, base["test_bleu"]))
    if scratch:
        ax.plot(*zip(*sorted(scratch)), "^:", label="trained from scratch at that depth")
    ax.set_xlabel(f"kept decoder layers (of {dec}; encoder {enc} layers kept)")
    ax.set_ylabel("test BLEU (sacrebleu)")
    ax.set_title(f"Figure 2, MT panel ({scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def build(records: list[dict], out_dir: Path, paper_csv: Path, scale: str, p_ld: float = 0.2) -> None:
    rows = tidy_rows(records)
    write_csv(out_dir / "raw.csv", rows, COLUMNS)
    write_text(out_dir / "table1.md", table_markdown(rows, records, read_csv(paper_csv), scale, p_ld))
    figure(rows, p_ld, out_dir / "figure2_mt.png", scale)
