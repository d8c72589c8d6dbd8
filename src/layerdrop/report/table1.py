"""Table 1 (translation BLEU) and Figure 2's MT panel (BLEU vs kept decoder layers), from run records.

Each run records its row (``roles.table1``, from ``role=`` in experiments/table1_mt.sh): ``baseline``,
``layerdrop``, ``deep_baseline``, ``deep_layerdrop`` (a deeper encoder), ``scratch`` (a shallower
decoder trained from scratch without LayerDrop, one per depth) or ``equal_compute`` (ours: the baseline
trained for the FLOPs of the LayerDrop run). The runs of one role with different seeds are averaged
(mean ± sample std, n).
"""

from __future__ import annotations

import math
from pathlib import Path

from layerdrop.report.collect import (
    aggregate,
    code_version_of,
    decoder_panel,
    decoder_rows,
    depth_verdicts,
    equal_compute_claim,
    equal_compute_section,
    mean_text,
    provenance,
    read_csv,
    regime_text,
    role_of,
    seed_values,
    seeds_note,
    versus,
    write_csv,
    write_text,
)
from layerdrop.report.curves import learning_lag
from layerdrop.report.verdict import MIN_SEEDS, RULE, ClaimResult, judge, judge_threshold, resolution
from layerdrop.utils.store import train_seconds

COLUMNS = ["run_key", "scale", "role", "seed", "encoder_layers", "decoder_layers", "norm", "lr", "layerdrop_p", "stack", "strategy", "kept_layers",
           "layers", "n_params", "test_bleu", "test_bleu_tok", "test_loss", "test_ppl", "test_sentences",
           "test_sentences_per_s", "beam", "lenpen", "steps", "tokens_seen", "train_wall_s", "train_tokens_per_s",
           "final_train_loss", "averaged_checkpoints", "git_sha", "code_version", "vocab_size"]
#: one model's sub-network, across seeds
KEYS = ("role", "encoder_layers", "decoder_layers", "stack", "strategy", "kept_layers", "layers")
METRICS = ("test_bleu", "test_bleu_tok", "test_loss", "test_ppl", "final_train_loss")
#: the issue's bar for "translation works" at cpu scale: the baseline's test BLEU
WORKS_BLEU = 15.0


def tidy_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        cfg, train = r["config"], r["train"]
        for e in r["eval"]:
            gen = e.get("generate", {})
            rows.append({
                "run_key": r["run_key"], "scale": r["scale"], "role": role_of(r, "table1"), "seed": cfg.get("seed"),
                "encoder_layers": cfg["model"]["encoder_layers"],
                "decoder_layers": cfg["model"]["decoder_layers"],
                "norm": "pre" if cfg["model"].get("pre_norm", False) else "post", "layerdrop_p": cfg["layerdrop"]["p"],
                "lr": ((cfg.get("optim") or {}).get("optimizer") or {}).get("lr"),
                "stack": e.get("stack", "decoder"), "strategy": e["strategy"], "kept_layers": e["depth"],
                "layers": " ".join(map(str, e["layers"])), "n_params": e["n_params"],
                **{k: e.get(k) for k in ("test_bleu", "test_bleu_tok", "test_loss", "test_ppl", "test_sentences",
                                         "test_sentences_per_s")},
                "beam": gen.get("beam"), "lenpen": gen.get("lenpen"), "steps": train["steps"],
                "tokens_seen": train["tokens_seen"], "train_wall_s": train_seconds(r),
                "train_tokens_per_s": train.get("train_tokens_per_s"),
                "final_train_loss": train.get("final", {}).get("train/loss"),
                "averaged_checkpoints": " ".join(map(str, train.get("averaged_checkpoints", []))),
                "git_sha": r.get("git_sha"), "code_version": code_version_of(r),
                "vocab_size": (r.get("data") or {}).get("vocab_size"),
            })
    return sorted(rows, key=lambda x: (x["encoder_layers"], x["decoder_layers"], x["layerdrop_p"], x["stack"],
                                       x["strategy"], x["kept_layers"], x["layers"], x["seed"] or 0))


def full(rows: list[dict], role: str, decoder_layers: int | None = None) -> dict | None:
    """The full-depth row of the role's model (from scratch: of the one with ``decoder_layers``)."""
    match = [r for r in rows if r["role"] == role and r["strategy"] == "none"
             and decoder_layers in (None, r["decoder_layers"])]
    return match[0] if match else None


def decoder_curve(rows: list[dict], role: str, metric: str = "test_bleu") -> dict[int, float]:
    """kept decoder layers -> test BLEU (or ``metric``), every-other pruning of the decoder, full model included."""
    return {d: r[metric] for d, r in decoder_rows(rows, role).items()}


def scratch(rows: list[dict]) -> dict[int, dict]:
    """decoder depth -> full row of the model trained from scratch with that decoder."""
    return dict(sorted((r["decoder_layers"], r) for r in rows if r["role"] == "scratch" and r["strategy"] == "none"))


def layerdrop_row(rows: list[dict]) -> dict | None:
    return full(rows, "layerdrop")


def main_row(rows: list[dict]) -> dict:
    """The 6/6 model the table is about: the LayerDrop row, else the baseline (Table 1's rows arrive one run at
    a time, and a page is written from whichever of the two has run)."""
    row = layerdrop_row(rows) or full(rows, "baseline")
    if row is None:
        raise ValueError("no run holds role 'layerdrop' or 'baseline' in table1 (each run records its row as "
                         "roles.table1, set by role=... when training): run `make reproduce-table1` first")
    return row


# Each LayerDrop row against the baseline of its own architecture, same seed (the deep pair is post-norm at
# cpu scale, the 6/6 rows pre-norm: never compared across)
LAG_PAIRS = (("", "baseline", "layerdrop"), ("deep encoder", "deep_baseline", "deep_layerdrop"))


def diverged(row: dict | None) -> bool:
    """A training that blew up: a non-finite loss, or a test perplexity no better than a uniform guess
    over the vocabulary (an under-trained model that merely translates badly has not diverged)."""
    if row is None:
        return False
    values = [row.get("final_train_loss"), row.get("test_loss")]
    if any(v is None or not math.isfinite(v) for v in values):
        return True
    return row["test_ppl"] >= row["vocab_size"]


def _values(row: dict | None) -> list[float]:
    return seed_values(row, "test_bleu")


def _vs(a: dict, b: dict, metric: str = "test_bleu") -> str:
    return versus(a, b, metric)


def claim_rows(rows: list[dict]) -> list[ClaimResult]:
    """Each claim Table 1 and its Figure 2 panel test, judged by the noise rule (report/verdict.py) on the
    seeds' test BLEU."""
    ld = layerdrop_row(rows)
    model = main_row(rows)
    enc, dec = model["encoder_layers"], model["decoder_layers"]
    base, deep_base, deep_ld = full(rows, "baseline"), full(rows, "deep_baseline"), full(rows, "deep_layerdrop")
    deep = (deep_ld or deep_base or {}).get("encoder_layers")
    out = []

    def add(claim, statement, verdict, detail):
        out.append(ClaimResult.of(claim, "table1", statement, verdict, detail))

    if base:
        v = judge_threshold(_values(base), WORKS_BLEU)
        add("precondition", f"translation works: the {enc}/{dec} baseline reaches {WORKS_BLEU:g} test BLEU", v,
            f"test BLEU {mean_text(base, 'test_bleu')}; {v.describe()}.")
    half = scratch(rows).get(dec // 2)
    if base and half:
        v = judge(_values(base), _values(half), higher_is_better=True, resolution=resolution("test_bleu"))
        add("precondition", f"depth matters: the {dec}-layer decoder beats {dec // 2} layers trained from scratch", v,
            f"test BLEU {_vs(base, half)}; {v.describe()}.")
    if base and ld:
        v = judge(_values(ld), _values(base), higher_is_better=True, resolution=resolution("test_bleu"))
        add("C7", f"LayerDrop improves the {enc}/{dec} Transformer (paper 29.3 -> 29.6 BLEU)", v,
            f"test BLEU {_vs(ld, base)}; {v.describe()}.")
    if deep_ld:
        best = max((x for x in (ld, base, deep_base) if x), key=lambda r: r["test_bleu"])
        v = judge(_values(deep_ld), _values(best), higher_is_better=True, resolution=resolution("test_bleu"))
        norms = "" if deep_ld["norm"] == best["norm"] else (
            f" (architectures differ: the deep model is {deep_ld['norm']}-norm, the other {best['norm']}-norm)")
        if deep_ld.get("lr") != best.get("lr"):
            norms += (f" (peak learning rates differ: the deep model's {deep_ld['lr']:g}, the other's {best['lr']:g};"
                      " results/stability_mt/ says why)")
        add("C8", f"the {deep}-encoder LayerDrop model does best (paper 30.2)", v,
            f"test BLEU {_vs(deep_ld, best)}; {v.describe()}{norms}.")
    if deep_base:
        seeds = deep_base.get("seeds", 1)
        outcome = ("inconclusive" if seeds < MIN_SEEDS else "held" if diverged(deep_base) else "not held")
        add("C8", f"without LayerDrop the {deep}-encoder model diverges (paper, text)", outcome,
            f"{deep_base['norm']}-norm; final train loss {mean_text(deep_base, 'final_train_loss', 3)}, test BLEU "
            f"{mean_text(deep_base, 'test_bleu')}" + (f" vs {mean_text(deep_ld, 'test_bleu')} with LayerDrop" if deep_ld else "")
            + (f"; {seeds} seed(s), the rule needs {MIN_SEEDS}" if seeds < MIN_SEEDS else "") + ".")
    ld_curve = {d: r for d, r in decoder_rows(rows, "layerdrop").items() if d < dec}
    base_curve = {d: r for d, r in decoder_rows(rows, "baseline").items() if d < dec}
    shared = sorted(d for d in ld_curve if d in base_curve)
    if shared:
        add("C1", "decoder pruned every other layer without fine-tuning, LayerDrop beats the pruned baseline at "
            "every depth", *depth_verdicts(ld_curve, base_curve, "test_bleu", True, "decoder layers"))
    from_scratch = scratch(rows)
    if any(d in ld_curve for d in from_scratch):
        add("C2", "the pruned LayerDrop model matches or beats a decoder of that depth trained from scratch",
            *depth_verdicts(ld_curve, from_scratch, "test_bleu", True, "decoder layers", kind="matches"))
    return out


def equal_compute(rows: list[dict]) -> ClaimResult | None:
    """The LayerDrop model against the baseline trained for the same FLOPs (ours, not a paper claim)."""
    ld = layerdrop_row(rows)
    return equal_compute_claim("table1", ld, full(rows, "equal_compute"), "test_bleu", True) if ld else None


def convergence_caution(records: list[dict]) -> list[str]:
    """The runs that had not converged for their schedule (the regime map's rule, ``regime.converged``:
    valid perplexity still at its best at the last validation and falling 1% or more over the last
    fifth of the steps), with how much they still gained, listed by row and seed."""
    from layerdrop.report.regime import METRIC, converged, curve_state

    late = []
    for r in sorted(records, key=lambda r: (role_of(r, "table1") or "", r["config"].get("seed") or 0)):
        curve = [p for p in r["train"].get("curve", []) if METRIC in p]
        state = curve_state(curve)
        if curve and not converged(state):
            gain = state["last_fifth_gain"]
            late.append(f"{role_of(r, 'table1')} seed {r['config'].get('seed')}"
                        + (f" ({100 * gain:.1f}%)" if gain is not None else ""))
    if not late:
        return []
    return ["", f"Caution: {len(late)} of {len(records)} runs had not converged when their step budget ended "
            f"(valid perplexity still falling over the last fifth of the steps): {', '.join(late)}. More "
            "training would still lower their perplexity and raise their BLEU."]


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
            "(a fixed seeded subset when fewer; perplexity covers all)"
            + (", with averaged checkpoints" if any(r["averaged_checkpoints"] for r in rows) else "")
            + "; `BLEU` is sacrebleu on detokenized text, `tok. BLEU` the paper's tokenized, compound-split "
            "variant (13a tokens; see README)." + regime_text(records))


def table_markdown(rows: list[dict], records: list[dict], paper: list[dict], scale: str) -> str:
    main_row(rows)
    paper_by_row = {p["row"]: p for p in paper}
    lines = ["# Table 1: English-German translation with LayerDrop", "", caption(records, rows, scale) + seeds_note(rows),
             "", "| Model | Enc | Dec | Params | BLEU (ours) | tok. BLEU (ours) | test ppl (ours) | Paper: enc/dec | "
             "Paper: BLEU |", "|---|---|---|---|---|---|---|---|---|"]
    spec = [("baseline", "Transformer"), ("layerdrop", "+ LayerDrop {p}"),
            ("deep_baseline", "Transformer, deep encoder"), ("deep_layerdrop", "+ LayerDrop {p}, deep encoder")]
    if full(rows, "equal_compute"):
        spec.append(("equal_compute", "Transformer, trained for the FLOPs of the LayerDrop run (ours)"))
    norms = {r["norm"] for r in rows if r["strategy"] == "none"}
    rates = {r.get("lr") for r in rows if r["strategy"] == "none"}
    for role, name in spec:
        r = full(rows, role)
        pp = paper_by_row.get(role, {"encoder_layers": "-", "decoder_layers": "-", "test_bleu": "-"})
        if r and len(norms) > 1:
            name += f" ({r['norm']}-norm)"
        if r and len(rates) > 1 and r.get("lr") is not None:
            name += f" (lr {r['lr']:g})"
        ours = (f"{r['encoder_layers']} | {r['decoder_layers']} | {r['n_params'] / 1e6:.2f}M | "
                f"{mean_text(r, 'test_bleu')} | {mean_text(r, 'test_bleu_tok')} | {mean_text(r, 'test_ppl')}"
                if r else "- | - | not run | - | - | -")
        if r and diverged(r):
            ours += " (diverged)"
        name = name.format(p=(r or layerdrop_row(rows) or {}).get("layerdrop_p") or "").replace(" ,", ",").strip()
        lines.append(f"| {name} | {ours} | {pp['encoder_layers']}/{pp['decoder_layers']} | {pp['test_bleu']} |")
    lines += ["", "Paper numbers: Fan et al. 2020, Table 1 (WMT16 en-de, newstest2014, tokenized compound-split "
              "BLEU), for comparison only; the paper's other rows: "
              + "; ".join(f"{p['model']} {p['test_bleu']}" for p in paper if p["row"] in ("vaswani", "dynamicconv"))
              + ".", "", "## Did the paper's claims hold at this scale?", ""]
    lines += [f"Noise rule: {RULE}.", ""]
    lines += [c.line() for c in claim_rows(rows)]
    lines += equal_compute_section(equal_compute(rows))
    best = max((r["test_bleu"] for r in rows if r["strategy"] == "none"), default=0.0)
    if best < 10:
        steps = "/".join(map(str, sorted({r["steps"] for r in rows})))
        lines += ["", f"Caution: the best full model scores {best:.2f} BLEU. After {steps} training steps these models "
                  "barely translate, so BLEU differences of a few tenths are within noise and the verdicts above "
                  "rest on them; the teacher-forced perplexity columns below rank the models more reliably at "
                  "this scale."]
    lines += convergence_caution(records)
    lines += learning_lag(records, "table1", LAG_PAIRS)
    lines += ["", "## Figure 2, MT panel: test BLEU (and teacher-forced test perplexity) by kept decoder layers",
              "", "The encoder keeps all its layers.", "",
              "| kept decoder layers | LayerDrop, pruned | baseline, pruned | trained from scratch | "
              "ppl: LayerDrop | ppl: baseline | ppl: scratch |", "|---|---|---|---|---|---|---|"]
    curves = []
    for metric in ("test_bleu", "test_ppl"):
        curves += [decoder_curve(rows, "layerdrop", metric), decoder_curve(rows, "baseline", metric),
                   {d: r[metric] for d, r in scratch(rows).items()}]
    for d in sorted(set().union(*curves)):
        cells = [f"{c[d]:.2f}" if d in c else "-" for c in curves]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "Figure: `figure2_mt.png`; learning curves: `curves.png`; raw numbers: `raw.csv` (every run x "
              "pruned depth).", ""]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path, scale: str) -> None:
    ld = main_row(rows)
    p = (layerdrop_row(rows) or {}).get("layerdrop_p")
    points = {d: r["test_bleu"] for d, r in scratch(rows).items()}
    base = full(rows, "baseline")
    if base:
        points[base["decoder_layers"]] = base["test_bleu"]
    decoder_panel(path, [(f"LayerDrop p={p}, pruned every-other", "o-", decoder_curve(rows, "layerdrop")),
                         ("baseline (p=0), pruned every-other", "s--", decoder_curve(rows, "baseline"))], points,
                  f"kept decoder layers (of {ld['decoder_layers']}; encoder {ld['encoder_layers']} layers kept)",
                  "test BLEU (sacrebleu)", f"Figure 2, MT panel ({scale} scale)")


def build(records: list[dict], out_dir: Path, paper_csv: Path, scale: str) -> None:
    """``records``: the runs holding a role in table1 (``collect.select_roles``)."""
    raw = tidy_rows(records)
    rows = aggregate(raw, KEYS, METRICS)
    main_row(rows)  # fails before anything is written
    write_csv(out_dir / "raw.csv", raw, COLUMNS)
    write_text(out_dir / "table1.md", table_markdown(rows, records, read_csv(paper_csv), scale))
    figure(rows, out_dir / "figure2_mt.png", scale)
