"""What a reproduction still has to train: every training run an experiment script makes, whether the
record store (or the run cache) already holds it, and what the rest will cost on this machine.

    python -m layerdrop.backlog table1_mt seed=1,2,3          # or experiments/table1_mt.sh
    SCALE=paper python -m layerdrop.backlog table2_lm

The script is run as its dry run (``LAYERDROP_DRY=1``: it prints each command instead of running it),
each training sweep is expanded into its runs and each run's key computed, as ``layerdrop.train``
would. A run is *done* when its record holds a finished training (``records/<task>/<key>``, or the
run folder's own) and every evaluation the script asks of it, *to evaluate* when it has trained but
lacks some of them (the script evaluates it from its weights, or trains it again where the weights
are not on this machine), *partial* when only its run folder's last checkpoint exists (the script
resumes it, in this session or a later one), and *to train* otherwise. The estimate for a run not done is
the median training wall time (every session of it) of the stored runs most like it: the same settings
but the seed; else the run's step budget times the median time a step of the stored runs of its task and
layer counts took; else that of its task's runs at another depth, scaled by the layer count; "unknown"
when the store has none. A partial run is estimated at what its
checkpoint's step leaves of that. Runs made on this CPU model (the same name and AMX) are preferred where they give an estimate,
since CPUs differ several-fold; else the runs of every machine count, each other CPU's times scaled to this one by
their measured speed ratio (``speed_ratios``: the median, over the task's layer counts stored from both CPUs, of
the ratio of their median seconds a step; every task's where this task has no such pair; unscaled, and said so,
where the store holds no run from both). A run the script trains with ``need_weights=true`` (a later step reads its
weights) whose record is stored but whose ``model.pt`` is not here is *to train* again, as the script will.
Fine-tunings of pretrained encoders (``classify``) are listed below the training runs, grouped by their
encoder, kept layers, start and seed: how many are done and what the rest cost (``backlog_classify``). The LM fine-tunings
(``finetune``) are counted, not estimated. Below the tables it names the CPUs the estimates were measured on beside this one, and
says where this CPU emulates bf16 and the runs left train in bf16: fp32 GEMMs here (``utils.bf16``), or a
warning where ``LAYERDROP_BF16_GEMM=native`` leaves them many times slower than estimated.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerdrop.backlog_classify import (
    FineTuning,
    estimate_fine_tunings,
    fine_tunings,
    render_fine_tunings,
    stored_fine_tunings,
)
from layerdrop.config import load_config
from layerdrop.launch import expanded
from layerdrop.utils import machine, runs
from layerdrop.utils.machine import cpu_of
from layerdrop.utils.store import stored_records, time_incomplete, train_seconds

REPO = Path(__file__).resolve().parents[2]
#: why a run whose record is stored is trained again: the script asks for its weights and they are not here
WEIGHTS_AGAIN = "again, for its weights (need_weights=true: a later step reads them)"
SEED_KEYS = ("seed", "shuffle_seed", "layerdrop_seed", "code")  # what differs between seeds of one setting


@dataclass
class Run:
    key: str
    task: str
    store: Path | None
    role: str | None
    seed: int
    state: str  # done | to evaluate | partial | to train
    config: dict
    overrides: list[str]
    estimate_s: float | None = None
    missing: str | None = None  # the evaluations a trained run lacks, in words
    measured_on: tuple[str, ...] = ()  # the CPUs of the stored runs its estimate draws on
    step: int | None = None  # a partial run's checkpointed step
    measured_with_amx: bool = False  # whether any of those CPUs has AMX bf16 units
    scaled: tuple[str, ...] = ()  # how other CPUs' times were scaled to this one, in words


def script_path(name: str) -> Path:
    """``table1_mt``, ``table1_mt.sh`` or a path -> the script; an unknown name lists the scripts."""
    path = Path(name)
    if path.suffix != ".sh":
        path = REPO / "experiments" / f"{name}.sh"
    if not path.exists():
        known = sorted(p.stem for p in (REPO / "experiments").glob("*.sh") if p.stem != "common")
        raise ValueError(f"no experiment script {name!r}: one of {', '.join(known)}, or a path to a .sh file")
    return path


def dry_run(script: Path, scale: str, overrides: list[str], env: dict | None = None,
            flops: bool = True) -> list[tuple[str, list[str]]]:
    """The commands the script would run (``LAYERDROP_DRY=1``: experiments/common.sh prints each as its kind,
    train, classify, finetune, context or report, then its arguments), as (kind, arguments). With ``flops``
    the equal-FLOPs step counts are computed for real (``LAYERDROP_DRY_FLOPS=1``; they read the data's
    vocabulary), since they decide run keys; without, the script prints the word EQUAL_FLOPS_STEPS where
    each count goes (the script tests, which check only the commands' shape, skip that cost)."""
    env = {**os.environ, "LAYERDROP_DRY": "1", "LAYERDROP_DRY_FLOPS": "1" if flops else "0", "SCALE": scale, **(env or {})}
    out = subprocess.run(["bash", str(script), *overrides], capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"the dry run of {script} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    lines = [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]
    return [(words[0], words[1:]) for words in lines]


def state_of(cfg, store: Path | None) -> tuple[str, str | None]:
    """The run's state, and for a trained run the evaluations it lacks (``train.unevaluated``'s words)."""
    run_dir = runs.run_dir(cfg)
    record = runs.read_record(run_dir, store)
    if record and "train" in record:
        missing = lacking(cfg, record)
        return ("to evaluate", missing) if missing else ("done", None)
    return ("partial" if (run_dir / "checkpoints" / "last.ckpt").exists() else "to train"), None


def lacking(cfg, record: dict) -> str | None:
    """What of the run's evaluation grid ``record`` lacks. ``train.unevaluated`` counts data-driven pruning
    as always missing (it needs the weights to be told); here a record with data-driven rows has it."""
    from layerdrop.tasks import get_task
    from layerdrop.train import unevaluated

    strategies = list(cfg.prune.strategies)
    if "data_driven" in strategies and any(r["strategy"] == "data_driven" for r in record.get("eval", [])):
        cfg = cfg.copy()
        cfg.prune.strategies = [s for s in strategies if s != "data_driven"]
    return unevaluated(cfg, get_task(cfg), record)


def training_runs(commands: list[tuple[str, list[str]]]) -> list[Run]:
    """Every distinct training run of the dry run's ``train`` commands, in the order the script trains them. A
    run the script asks for again (to evaluate a model it shares with another artefact, say) is listed once; it
    is *to evaluate* if any of the commands that name it asks an evaluation its record lacks."""
    out: dict[str, Run] = {}
    for run, cfg in expanded(commands, "train"):
        key = runs.run_key(cfg)
        if key not in out:
            store = runs.record_store(cfg)
            state, missing = state_of(cfg, store)
            out[key] = Run(key, str(cfg.task.name), store, cfg.get("role"), int(cfg.seed), state,
                           runs.training_config(cfg), list(run), missing=missing)
        elif out[key].state == "done":
            state, missing = state_of(cfg, out[key].store)
            if state == "to evaluate":
                out[key].state, out[key].missing = state, missing
        if out[key].state == "done" and cfg.get("need_weights") and not (runs.run_dir(cfg) / "model.pt").exists():
            out[key].state, out[key].missing = "to train", WEIGHTS_AGAIN
    return list(out.values())


def settings(found: list[Run]) -> dict[str, str]:
    """Run key -> the overrides that set it apart from the script's other runs (seed and role aside)."""
    common = set.intersection(*(set(r.overrides) for r in found)) if found else set()
    return {r.key: " ".join(o for o in r.overrides if o not in common and not o.startswith(("seed=", "role=")))
            for r in found}


def _layers(config: dict) -> tuple:
    model = config.get("model", {})
    return tuple(model.get(k) for k in ("n_layers", "encoder_layers", "decoder_layers"))


def estimate(run: Run, records: list[dict], seconds=train_seconds) -> tuple[float, float] | None:
    """(median training wall time in s, median steps) of the stored runs most like ``run`` (see the module
    docstring); None where the store has none. Runs resumed before their sessions were kept
    (``time_incomplete``) do not count: their time is the last session's alone. ``seconds`` reads a record's
    time (``train_seconds``, or that scaled to this CPU)."""
    def without_seed(config):  # the seed reaches the data order and the draws too; the code version is no setting
        if not isinstance(config, dict):
            return config
        return {k: without_seed(v) for k, v in config.items() if k not in SEED_KEYS}

    records = [r for r in records if not time_incomplete(r)]
    same = [r for r in records if without_seed(r["config"]) == without_seed(run.config)]
    if same:
        return (statistics.median(seconds(r) for r in same),
                statistics.median(r["train"].get("steps") or 0 for r in same))
    steps = run.config.get("trainer", {}).get("max_steps")
    trained = [r for r in records if r["train"].get("steps")]
    alike = [r for r in trained if _layers(r["config"]) == _layers(run.config)]
    if alike and steps:
        return steps * statistics.median(seconds(r) / r["train"]["steps"] for r in alike), steps
    # no stored run of its depth: the same stacks at another depth, a step's time scaled by the layer count
    # (a deeper decoder of Table 3, say; it leaves out what does not grow with depth, so it reads a little long)
    shaped = [r for r in trained if _stacks(_layers(r["config"])) == _stacks(_layers(run.config))
              and _depth(r["config"])]
    if not shaped or not steps or not _depth(run.config):
        return None
    return steps * statistics.median(seconds(r) / r["train"]["steps"] * _depth(run.config) / _depth(r["config"])
                                     for r in shaped), steps


def _depth(config: dict) -> int:
    """The model's layers, every stack's together."""
    return sum(n for n in _layers(config) if n)


def _stacks(layers: tuple) -> tuple:
    """Which stacks a model has (decoder-only; or encoder and decoder), from its layer counts."""
    return tuple(n is not None for n in layers)


def speed_ratios(by_task: dict[str, list[dict]], here: tuple, task: str, layers: tuple) -> dict[tuple, tuple[float, str]]:
    """Other CPU -> (how many times longer a step takes here, what that was measured on, in words), for a run of
    ``task`` with ``layers``. For each (task, layer counts) stored from both CPUs, the ratio of their median
    seconds a step; the median of those ratios over ``task``'s own pairs, else over the pairs of models with
    the same stacks (CPUs differ by task: the bf16 language models ran 6x slower on the AMD EPYC than with
    AMX, the sequence-to-sequence models 2-3x), else over every pair. A CPU with no pair is left out (its
    times stay unscaled)."""
    per_step: dict[tuple, dict[tuple, list[float]]] = {}
    for name, records in by_task.items():
        for r in records:
            cpu, steps = cpu_of(r), r["train"].get("steps")
            if cpu and steps and "config" in r and not time_incomplete(r):
                per_step.setdefault((name, _layers(r["config"])), {}).setdefault(cpu, []).append(train_seconds(r) / steps)
    out = {}
    for other in {c for by_cpu in per_step.values() for c in by_cpu} - {here}:
        pairs = {group: statistics.median(by_cpu[here]) / statistics.median(by_cpu[other])
                 for group, by_cpu in per_step.items() if here in by_cpu and other in by_cpu}
        own = {g: v for g, v in pairs.items() if g[0] == task}
        alike = {g: v for g, v in pairs.items() if _stacks(g[1]) == _stacks(layers)}
        chosen = own or alike or pairs
        if chosen:
            basis = ", ".join(f"{name} {'/'.join(str(n) for n in group if n)}" for name, group in sorted(chosen, key=str))
            out[other] = (statistics.median(chosen.values()), basis)
    return out


def scaled_estimate(run: Run, records: list[dict], ratios: dict[tuple, tuple[float, str]], here: tuple | None):
    """``estimate`` over every machine's records, each other CPU's times times its speed ratio to this one;
    with how each was scaled, in words (a CPU with no ratio: unscaled)."""
    def seconds(r):
        return train_seconds(r) * ratios.get(cpu_of(r), (1.0, ""))[0]

    found = estimate(run, records, seconds)
    words = []
    for cpu in sorted({cpu_of(r) for r in records if cpu_of(r)} - {here}, key=str):
        if cpu in ratios:
            ratio, basis = ratios[cpu]
            words.append(f"{cpu[0]}'s times x{ratio:.2f} (a step's time here over there, from {basis})")
        else:
            words.append(f"{cpu[0]}'s times unscaled (no run stored from both CPUs)")
    return found, tuple(words)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of a partial run's ``checkpoints/last.ckpt`` (None where it cannot be read): memory-mapped,
    tensors-only, so a large checkpoint costs little to ask."""
    import torch

    try:
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["global_step"])
    except Exception:  # noqa: BLE001  (an empty, truncated or foreign file: the step is unknown)
        return None


def backlog(script: Path, scale: str, overrides: list[str]) -> tuple[list[Run], dict[str, int]]:
    found, others, _ = backlog_all(script, scale, overrides)
    return found, others


def backlog_all(script: Path, scale: str, overrides: list[str]) -> tuple[list[Run], dict[str, int], list[FineTuning]]:
    """The training runs, the counts of the LM fine-tunings, and the encoder fine-tunings, each with its state."""
    commands = dry_run(script, scale, overrides)
    found = training_runs(commands)
    tuned = fine_tunings(commands)
    # store -> task -> its finished records, read once: a run's estimate reads its task's, the speed ratios every task's
    stored = {store: {p.name: stored_records(store, p.name) for p in sorted(store.glob("*/")) if p.is_dir()}
              for store in {r.store for r in found if r.store}}
    here = machine.this_cpu()
    for run in found:
        if run.state in ("partial", "to train"):
            records = stored.get(run.store, {}).get(run.task, [])
            # this CPU's own runs where they can estimate it (CPUs differ several-fold), else every machine's, scaled
            mine = [r for r in records if here and cpu_of(r) == here]
            found_estimate = estimate(run, mine) if mine else None
            if found_estimate is None:
                ratios = speed_ratios(stored.get(run.store, {}), here, run.task, _layers(run.config)) if here else {}
                mine = records
                found_estimate, run.scaled = scaled_estimate(run, records, ratios, here)
            if run.state == "partial":
                run.step = checkpoint_step(runs.run_dir(load_config(run.overrides)))
            if found_estimate is not None:  # a partial run has what its checkpoint holds left to train
                seconds, steps = found_estimate
                done = min(run.step or 0, steps) / steps if steps else 0.0
                run.estimate_s = seconds * (1 - done)
            run.measured_on = tuple(sorted({machine.cpus(r["machine"]) for r in mine
                                            if (r.get("machine") or {}).get("cpus")}))
            run.measured_with_amx = any((r.get("machine") or {}).get("amx_bf16") for r in mine)
    if tuned:
        estimate_fine_tunings(tuned, stored_fine_tunings(commands), here)
    others: dict[str, int] = {}
    for kind, _ in commands:
        if kind == "finetune":
            others[kind] = others.get(kind, 0) + 1
    return found, others, tuned


def render(script: Path, scale: str, overrides: list[str], found: list[Run], others: dict[str, int]) -> str:
    lines = [f"{script.name} {' '.join(overrides)} (scale {scale}): {len(found)} training runs", "",
             "| run | task | role | setting | seed | state | estimate |", "|---|---|---|---|---|---|---|"]
    setting = settings(found)
    for r in found:
        est = ("-" if r.state in ("done", "to evaluate") else "unknown" if r.estimate_s is None
               else f"{r.estimate_s / 60:.0f} min")
        state = (f"{r.state}: {r.missing}" if r.state in ("to evaluate", "to train") and r.missing
                 else f"partial: step {r.step} checkpointed" if r.state == "partial" and r.step is not None else r.state)
        lines.append(f"| {r.key} | {r.task} | {r.role or '-'} | {setting[r.key] or '-'} | {r.seed} | {state} | {est} |")
    left = [r for r in found if r.state in ("partial", "to train")]
    known = sum(r.estimate_s for r in left if r.estimate_s is not None)
    unknown = sum(r.estimate_s is None for r in left)
    evaluate = sum(r.state == "to evaluate" for r in found)
    lines += ["", f"{len(found) - len(left)} of {len(found)} runs trained"
              + (f" ({evaluate} still to evaluate)" if evaluate else "")
              + f"; {len(left)} left, about {known / 3600:.1f} h "
              "of training by the stored runs most like them" + (f", {unknown} with no estimate" if unknown else "")
              + " (evaluation not included)."]
    if others:
        lines.append("Also in the script: " + ", ".join(f"{n} {k} sweep(s)" for k, n in sorted(others.items()))
                     + ", not counted above.")
    return "\n".join(lines)


def machine_note(found: list[Run]) -> str | None:
    """Where the estimates of the runs left were measured, beside this machine, and, where this CPU
    emulates bf16 and those runs train in bf16, that they get fp32 GEMMs here (slower than the AMX
    estimates), or a warning where ``LAYERDROP_BF16_GEMM=native`` leaves them many times slower."""
    left = [r for r in found if r.state in ("partial", "to train")]
    if not left:
        return None
    measured = sorted({m for r in left for m in r.measured_on})
    here = machine.cpus(machine.machine_info())
    lines = [f"Estimates measured on {'; '.join(measured) or 'no stored run'}. This machine: {here}."]
    scaled = sorted({w for r in left for w in r.scaled})
    if scaled:
        lines.append("Where this CPU's own runs could not estimate a run, other CPUs' were scaled: " + "; ".join(scaled) + ".")
    for precision, accelerator in sorted({(str(r.config.get("trainer", {}).get("precision")),
                                           str(r.config.get("trainer", {}).get("accelerator", "auto"))) for r in left}):
        warning = machine.slow_bf16_warning(accelerator, precision)
        if warning:
            lines.append(f"**Warning**: {warning}")
        elif machine.fp32_gemm_wanted(accelerator, precision):
            slower = (", so they take longer than the estimates measured on a CPU with AMX"
                      if any(r.measured_with_amx for r in left) else "")
            lines.append(f"This CPU has no bf16 units: the {precision} runs compute autocast's matrix products through "
                         f"fp32 GEMMs here (the same runs, layerdrop.utils.bf16), at about fp32 speed{slower}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="an experiment script: table1_mt, experiments/figure4_lm.sh, ...")
    parser.add_argument("--scale", default=os.environ.get("SCALE", "cpu"), choices=("cpu", "paper"))
    args, overrides = parser.parse_known_args(argv)
    script = script_path(args.script)
    found, others, tuned = backlog_all(script, args.scale, overrides)
    print(render(script, args.scale, overrides, found, others))
    if tuned:
        print("\n" + render_fine_tunings(tuned))
    note = machine_note(found)
    if note:
        print("\n" + note)


if __name__ == "__main__":
    main()
