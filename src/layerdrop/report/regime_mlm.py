"""The cpu pretraining probe (``make tune-pretrain``) from its records: ``results/regime_mlm/``.

Does masked-LM pretraining on the English text from packages transfer to the classification stand-ins at
this scale? For each stand-in: its majority class (what a classifier that learnt nothing scores), the
architecture fine-tuned from a fresh initialisation (``classify.init=scratch``) and the same architecture
fine-tuned from the pretrained encoder, by one recipe. Every row is one seed, so no claim is judged here: the
``±`` is the test set's own sampling error (binomial), a floor under the seed noise, not the seed noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import save_figure, write_csv, write_text  # noqa: E402
from layerdrop.report.glue import _datasets, join_parents, pool_of  # noqa: E402
from layerdrop.report.regime import run_summary  # noqa: E402
from layerdrop.report.verdict import ClaimResult  # noqa: E402
from layerdrop.utils.machine import machines  # noqa: E402
from layerdrop.utils.store import train_seconds  # noqa: E402

#: an encoder probed with one classification head on inputs of one length: (pretraining run, pooling, input
#: length): the length is ``classify.max_len`` where it is not the pretraining block (the default), else None.
#: A probe's rows are never mixed with another head's or length's: both decide what fine-tuning reads (at 64
#: tokens most pair examples are cut)
Probe = tuple[str, str, int | None]

INITS = ("scratch", "pretrained")
TRANSFERS = "pretraining transfers: the cpu encoder "  # how each encoder's precondition statement begins
COLOURS = {"pretrained": "C0", "scratch": "C1"}  # the same in every panel
COLUMNS = ["run_key", "source_run_key", "pool", "max_len", "pretraining_block", "init", "dataset", "stand_in_for", "encoder_layers", "layerdrop_p", "seed",
           "lr", "valid_acc", "test_acc", "test_examples", "majority_test_acc", "steps", "best_step", "train_wall_s",
           "code_version"]


def cut_share(split: dict, max_len: int | None) -> str:
    """`` (76% cut at 64)``: the share of a split's examples cut at ``classify.max_len`` tokens (a pair's
    second text first), which hides what a pair task needs; empty where the record does not count them."""
    if "truncated" not in split or not split.get("examples"):
        return ""
    return f" ({100 * split['truncated'] / split['examples']:.0f}% cut at {max_len})"


def majority(record: dict, split: str = "test") -> float:
    """The share of the split's most frequent label: the accuracy of always answering it."""
    labels = record["data"]["splits"][split]["labels"]
    return 100 * max(labels.values()) / sum(labels.values())


def binomial_se(acc: float, n: int) -> float:
    """Standard error (percentage points) of an accuracy measured on n independent examples."""
    p = acc / 100
    return 100 * math.sqrt(p * (1 - p) / n) if n else float("nan")


def rows_of(records: list[dict]) -> list[dict]:
    return [{"run_key": r["run_key"], "source_run_key": r["source_run_key"], "pool": pool_of(r),
             "max_len": r["classify"].get("max_len"), "pretraining_block": r["parent"].get("block"),
             "init": r["classify"].get("init", "pretrained"), "dataset": r["dataset"],
             "stand_in_for": r["stand_in_for"], "encoder_layers": r["parent"]["n_layers"],
             "layerdrop_p": r["parent"]["layerdrop_p"], "seed": r["seed"], "lr": r["classify"]["lr"],
             "valid_acc": 100 * r["valid_acc"], "test_acc": 100 * r["test_acc"], "test_examples": r["test_examples"],
             "majority_test_acc": majority(r), "steps": r["train"]["steps"],
             "best_step": (r["train"].get("selected") or {}).get("step"), "train_wall_s": train_seconds(r),
             "code_version": r.get("code_version")} for r in records]


def probe_of(row: dict) -> Probe:
    length = row["max_len"] if row["max_len"] != row["pretraining_block"] else None
    return row["source_run_key"], row["pool"], length


def probe_of_record(record: dict) -> Probe:
    """``probe_of`` for a record joined with its parent."""
    return probe_of({"source_run_key": record["source_run_key"], "pool": pool_of(record),
                     "max_len": record["classify"].get("max_len"), "pretraining_block": record["parent"].get("block")})


def probe_order(probe: Probe) -> tuple[str, str, int]:
    """Sort key: by encoder, head, then input length (the pretraining block first)."""
    return probe[0], probe[1], probe[2] or 0


def probe_label(probe: Probe, positions: str | None = None) -> str:
    """``key (positions)``, with the pooling named unless it is RoBERTa's first position and the input
    length unless it is the pretraining block (the fine-tuning default)."""
    key, pool, max_len = probe
    label = f"{key} ({positions})" if positions else key
    label = label if pool == "first" else f"{label}, {pool} pool"
    return label if max_len is None else f"{label}, {max_len} tokens"


def setting_of(record: dict) -> str:
    """What decides a fine-tuning from scratch (``record`` joined with its parent): the parent's model, LayerDrop
    and data settings (the architecture and tokenizer it copies), the fine-tuning recipe but its start and
    learning rate, the seed and the fine-tuning code. Not how long or how the parent was trained: a scratch
    fine-tuning never reads its weights. A pretrained row with the same setting is that scratch row's pair."""
    recipe = {k: v for k, v in record["classify"].items() if k not in ("init", "lr")}
    return json.dumps({"parent": record["parent"].get("copied"), "recipe": recipe, "seed": record["seed"],
                       "code": record.get("code_version")}, sort_keys=True, default=str)


def best_by_init(rows: list[dict], settings: dict[str, str] | None = None) -> dict[tuple[Probe, str, str], dict]:
    """(probe, dataset, init) -> the fine-tuning with the best valid accuracy (of a learning-rate sweep). A
    scratch fine-tuning names the pretraining run whose architecture it copies. With ``settings`` (run key ->
    ``setting_of``), a probe with no scratch row of its own on a stand-in borrows the best one of the same
    setting made for another encoder (an encoder pretrained longer copies the same architecture); the borrowed
    row says whose it is (``shared_from``)."""
    by = {(probe_of(r), r["dataset"], r["init"]): r for r in sorted(rows, key=lambda r: r["valid_acc"])}
    if not settings:
        return by
    scratch: dict[str, dict] = {}
    for r in sorted((r for r in rows if r["init"] == "scratch"), key=lambda r: r["valid_acc"]):
        scratch[settings[r["run_key"]]] = r
    for r in rows:
        key, twin = (probe_of(r), r["dataset"], "scratch"), scratch.get(settings[r["run_key"]])
        if r["init"] == "pretrained" and key not in by and twin:
            by[key] = {**twin, "shared_from": twin["source_run_key"]}
    return by


def lr_text(lr: float) -> str:
    """A learning rate as the scripts write it: 3e-4, 1e-3, 2.5e-4."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def sweep_note(row: dict, rows: list[dict]) -> str:
    """The learning rate a cell reports, and the rates it was picked from on valid when more than one ran (the
    rows of the same probe, stand-in and start: a borrowed scratch row's own probe's)."""
    tried = sorted({r["lr"] for r in rows
                    if (probe_of(r), r["dataset"], r["init"]) == (probe_of(row), row["dataset"], row["init"])})
    return f", lr {lr_text(row['lr'])}" + (f" (best of {', '.join(map(lr_text, tried))})" if len(tried) > 1 else "")


def text_name(data: dict) -> str:
    """The text an encoder was pretrained on: its sources (``data.sources``), or the one ``data.source``."""
    return "+".join(data.get("sources") or [data.get("source") or "?"])


def pretraining_text(data: dict, train_tokens: int | None, epochs: float | None) -> str:
    """``text_name``, with the train tokens it read from that text and how many passes its steps made."""
    text = text_name(data)
    if train_tokens:
        size = f"{train_tokens / 1e6:.1f}M" if train_tokens >= 1e6 else f"{train_tokens / 1e3:.0f}k"
        text += f", {size} tokens" + (f" x {epochs}" if epochs is not None else "")
    return text


def _pretraining(runs_dir: Path, keys: set[str]) -> list[str]:
    lines = ["| pretraining run | text (train tokens x epochs) | layers | LayerDrop | dropout | steps | best valid "
             "masked-LM ppl (step) | still improving | last fifth | train min | masked ppl: context / shuffled / "
             "none (unigram) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    texts = set()
    for key in sorted(keys):
        record = json.loads((runs_dir / "mlm" / key / "metrics.json").read_text())
        r = run_summary(record)
        best = f"{r['best_valid_ppl']:.1f} ({r['best_step']})" if r["best_step"] is not None else "-"
        gain = f"{100 * r['last_fifth_gain']:.1f}%" if r["last_fifth_gain"] is not None else "-"
        text = pretraining_text(record["config"]["data"], r["train_tokens"], r["epochs"])
        texts.add(text_name(record["config"]["data"]))
        lines.append(f"| {key} | {text} | {r['layers']} | {r['layerdrop_p']} | {r['dropout']} | {r['steps']} | {best} | "
                     f"{'yes' if r['still_improving'] else 'no'} | {gain} | {r['train_wall_s'] / 60:.1f} | "
                     + _context(runs_dir / "mlm" / key / "context.json") + " |")
    return lines + ["", "*masked ppl* (`python -m layerdrop.metrics.context`, on the same fixed masks of the valid "
                    "split): with the context as it is, with the unmasked words shuffled within each block, and with "
                    "no context, beside the unigram perplexity. Shuffled close to intact means the encoder reads a bag "
                    "of words, not word order."] + (
        ["", "Masked-LM perplexities of encoders pretrained on different text do not compare: each text has its "
         "own tokenizer and valid split."] if len(texts) > 1 else [])


def positions_by_encoder(records: list[dict]) -> dict[str, str]:
    """Pretraining run -> how its encoder encodes position and, where known, how many steps it was pretrained
    (``alibi positions, 4,000 steps``; ``records`` joined with their parents): what tells two probed encoders apart."""
    out = {}
    for r in records:
        steps = r["parent"].get("steps")
        out[r["source_run_key"]] = f"{r['parent']['positions']} positions" + (f", {steps:,} steps" if steps else "")
    return out


def _context(path: Path) -> str:
    if not path.exists():
        return "not measured"
    c = json.loads(path.read_text())
    return f"{c['intact']:.1f} / {c['shuffled']:.1f} / {c['no_context']:.1f} ({c['unigram']:.1f})"


def build(records: list[dict], out: Path, scale: str, runs_dir: Path = Path("runs")) -> None:
    records = join_parents(records, runs_dir)
    rows = rows_of(records)
    write_csv(out / "raw.csv", sorted(rows, key=lambda r: (r["dataset"], r["init"], r["lr"], r["seed"])),
              columns=COLUMNS)
    head = ["encoder (positions), head", "stand-in (for)", "train / valid / test examples (train cut)",
            "majority class (test)"] + \
           [f"{init}: valid / **test**" for init in INITS] + ["pretrained - scratch (test)"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = best_by_init(rows, {r["run_key"]: setting_of(r) for r in records})
    of_row = {(probe_of_record(r), r["dataset"]): r for r in records}  # a record per row: its splits and cuts
    positions = positions_by_encoder(records)
    for probe in sorted({probe_of(r) for r in rows}, key=probe_order):
        encoder = probe_label(probe, positions[probe[0]])
        for dataset, stand_in in _datasets([r for r in rows if probe_of(r) == probe]):
            cells = []
            for init in INITS:
                r = by.get((probe, dataset, init))
                cells.append(f"{r['valid_acc']:.1f} / **{r['test_acc']:.1f}** ± "
                             f"{binomial_se(r['test_acc'], r['test_examples']):.1f}{sweep_note(r, rows)}"
                             + (f" (of {r['shared_from']})" if "shared_from" in r else "") if r else "-")
            a, b = by.get((probe, dataset, "pretrained")), by.get((probe, dataset, "scratch"))
            diff = f"{a['test_acc'] - b['test_acc']:+.1f}" if a and b else "-"
            record = of_row[probe, dataset]
            split, max_len = record["data"]["splits"], record["classify"].get("max_len")
            maj = next(r["majority_test_acc"] for r in rows if r["dataset"] == dataset)
            table.append(f"| {encoder} | {dataset} ({stand_in}) | "
                         f"{' / '.join(str(split[s]['examples']) for s in ('train', 'valid', 'test'))}"
                         f"{cut_share(split['train'], max_len)} | {maj:.1f} | " + " | ".join(cells) + f" | {diff} |")
    wall = sum(r["train_wall_s"] for r in rows) / 60
    lines = [
        "# cpu pretraining probe: does masked-LM pretraining transfer to the stand-ins?", "",
        f"Scale `{scale}`; {len(rows)} fine-tunings, {len(records[0]['kept_layers'])}-layer encoders, one seed each; "
        f"machine {machines(records)}; fine-tuning wall time "
        f"{wall:.1f} min (`make tune-pretrain`). Stand-ins are named as such: none of these is the GLUE task.", "",
        "## The pretrained encoder", "", *_pretraining(runs_dir, {r["source_run_key"] for r in rows}), "",
        "## Fine-tuned: from scratch against pretrained", "",
        "Accuracy in %, the best valid point of each fine-tuning (its test accuracy beside it), and its "
        "fine-tuning learning rate; where several learning rates ran, the one best on valid (*best of* names "
        "those tried). *majority class* is what always answering the test split's "
        "most frequent label scores. The `±` is the test set's binomial standard error, a floor under the "
        "seed-to-seed noise: one seed per row judges nothing, so this page gives no verdicts.", "",
        *table, "", *shared_note(by), *cautions(rows, runs_dir, by), "`curves.png`: valid accuracy against fine-tuning steps, per stand-in.", "",
        "Raw numbers: `raw.csv`.", ""]
    write_text(out / "regime_mlm.md", "\n".join(lines))
    curves(records, out / "curves.png")


def shared_note(by: dict) -> list[str]:
    """Says which scratch rows are borrowed, and why that is sound."""
    if not any("shared_from" in r for r in by.values()):
        return []
    return ["*(of KEY)*: a scratch row borrowed from encoder KEY's probe. A fine-tuning from scratch reads only its "
            "pretraining run's architecture, LayerDrop rate and tokenizer (with the seed and the recipe), never its "
            "weights, so encoders that differ only in how they were trained share one (`setting_of`).", ""]


def cautions(rows: list[dict], runs_dir: Path, by: dict | None = None) -> list[str]:
    """What the probe says, computed: an encoder that ignores word order (shuffled context within 1% of
    intact), and stand-ins where pretraining gains nothing over scratch (test difference within 2 binomial
    standard errors of the two accuracies combined, or below it). ``by``: ``best_by_init`` over every row,
    borrowed scratch rows included (default: over ``rows`` alone)."""
    out = []
    for key in sorted({r["source_run_key"] for r in rows}):
        path = runs_dir / "mlm" / key / "context.json"
        if path.exists():
            c = json.loads(path.read_text())
            gap = c["shuffled"] / c["intact"] - 1
            if abs(gap) < 0.01:
                out.append(f"Caution: encoder {key} reads no word order: shuffling the unmasked context changes its "
                           f"masked-token perplexity by {100 * gap:+.2f}% ({c['intact']:.1f} vs {c['shuffled']:.1f}; "
                           f"unigram {c['unigram']:.1f}). It learnt a bag of words, so claims about its layers test little.")
    by = best_by_init(rows) if by is None else by
    for probe in sorted({probe_of(r) for r in rows}, key=probe_order):
        flat = []
        for dataset in sorted({r["dataset"] for r in rows}):
            a, b = by.get((probe, dataset, "pretrained")), by.get((probe, dataset, "scratch"))
            if a and b:
                se = math.hypot(binomial_se(a["test_acc"], a["test_examples"]),
                                binomial_se(b["test_acc"], b["test_examples"]))
                if a["test_acc"] - b["test_acc"] < 2 * se:
                    flat.append(f"{dataset} ({a['test_acc'] - b['test_acc']:+.1f} points, 2 se {2 * se:.1f})")
        if flat:
            out.append(f"Caution: encoder {probe_label(probe)}: pretraining gains nothing over the same encoder from scratch on "
                       + "; ".join(flat) + ": with this encoder Tables 4 and 7 and Figure 8 cannot test the paper's "
                       "claims.")
    return [x for line in out for x in (line, "")]


def precondition(records: list[dict], runs_dir: Path) -> list[ClaimResult]:
    """The pretraining artefacts' precondition for the claims page, one result per pretrained encoder probed:
    it reads word order and transfers to the stand-ins. One seed is inconclusive by the noise rule, whatever
    the cautions say; they are the detail."""
    results = []
    records = join_parents(records, runs_dir)
    all_rows, positions = rows_of(records), positions_by_encoder(records)
    by = best_by_init(all_rows, {r["run_key"]: setting_of(r) for r in records})
    for probe in sorted({probe_of(r) for r in all_rows}, key=probe_order):
        key, pool, max_len = probe
        rows = [r for r in all_rows if probe_of(r) == probe]
        found = cautions(rows, runs_dir, by)
        seeds = len({r["seed"] for r in rows})
        detail = " ".join(line.removeprefix("Caution: ") for line in found if line) or "no caution"
        head = ("" if pool == "first" else f", {pool}-pooled head") + \
            ("" if max_len is None else f", {max_len}-token inputs")
        results.append(ClaimResult(
            "precondition", "regime_mlm", f"{TRANSFERS}{key} ({positions[key]}{head}) "
            "reads word order and beats the same encoder from scratch after fine-tuning",
            "inconclusive" if seeds < 3 else "not held" if found else "held",
            f"{detail} ({seeds} seed(s); `make tune-pretrain`, results/regime_mlm/)"))
    return results


def curves(records: list[dict], path: Path) -> None:
    datasets = _datasets([{"dataset": r["dataset"], "stand_in_for": r["stand_in_for"]} for r in records])
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.2 * max(1, len(datasets)), 3.5), squeeze=False)
    probes = sorted({probe_of_record(r) for r in records}, key=probe_order)
    for ax, (dataset, stand_in) in zip(axes[0], datasets, strict=False):
        mine = [r for r in records if r["dataset"] == dataset]
        for r in mine:
            points = [p for p in r["train"]["curve"] if "val/acc" in p]
            init, probe = r["classify"].get("init", "pretrained"), probe_of_record(r)
            ax.plot([p["step"] for p in points], [100 * p["val/acc"] for p in points], marker=".",
                    color=COLOURS[init], ls=("-", "--", ":", "-.")[probes.index(probe) % 4],
                    label=f"{probe_label(probe)} {init}, lr {r['classify']['lr']:g}")
        ax.axhline(majority(mine[0], "valid"), color="grey", ls=":", label="majority class")
        ax.set_title(f"{stand_in} stand-in: {dataset}")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("valid accuracy (%)")
        ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)
