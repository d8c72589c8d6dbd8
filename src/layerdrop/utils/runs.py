"""The run cache: one folder per training configuration, keyed by a hash of the resolved config and
of the training code (``code_version``).

A folder holds ``checkpoints/`` (Lightning, for resuming), ``model.pt`` (the trained model, written
once training has finished) and ``metrics.json`` (training summary plus every evaluated pruned
depth). Re-running a finished configuration trains nothing; evaluations already made are reused;
an interrupted run resumes from ``checkpoints/last.ckpt``, in this session or a later one (the run
cache outlives its processes), and ``sessions.json`` keeps the training time of the sessions that
ended before it finished, which its record adds up (``train.total_wall_s``). Everything is written
atomically, and ``.lock`` keeps a second process out of a folder while one works in it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from layerdrop.utils import store as _store
from layerdrop.utils.lock import (  # noqa: F401  (re-exported: runs.locked, runs.file_lock, ...)
    SESSIONS_FILE,
    RunLockedError,
    file_lock,
    locked,
    with_sessions,
)
from layerdrop.utils.machine import cpu_model, cpus, machine_info  # noqa: F401  (re-exported)
from layerdrop.utils.store import (  # noqa: F401  (re-exported: runs.read_record, runs.write_json, ...)
    RECORD_FILES,
    default_store,
    read_json,
    read_record,
    record_store,
    stored,
    sync_store,
    time_incomplete,
    train_seconds,
    write_json,
)

#: config sections that decide what a trained model is
TRAIN_SECTIONS = ("scale", "task", "model", "data", "optim", "trainer", "layerdrop", "seed")
#: keys that change how a run looks or where it lives, not what it learns
COSMETIC = {
    "data": {"data_dir", "num_workers", "eval_batch_size", "eval_max_tokens", "context_window"},  # evaluation only
    "task": {"metric"},  # evaluation only
    "trainer": {"enable_progress_bar", "log_every_n_steps", "enable_model_summary", "val_check_interval",
                "limit_val_batches", "num_sanity_val_steps"},
}

#: settings added after runs existed: at these values they leave a run's key (and cache) unchanged
LATER_DEFAULTS = {
    "layerdrop": {"target": "layers", "learned": False, "encoder_p": None, "decoder_p": None},
    "data": {"max_train_tokens": None},
}


#: the source files (globs under src/layerdrop/) whose code decides the trained model: the models, the
#: training modules, the tasks that build them, the optimizer, the training loop and the data modules that
#: batch the corpus. Not listed: corpus building (data/corpus.py, mt_corpus.py, sources): each corpus
#: carries its own format version and checksums in its manifest, which the record keeps; and
#: evaluation-only code (evaluate.py, metrics/), which does not change the weights (models/generate.py is
#: covered, being in models/).
CODE_FILES = ("models/*.py", "lit/*.py", "tasks/*.py", "optim.py", "train.py", "classify.py", "data/lm.py", "data/mt.py",
              "data/pair_batches.py", "data/text_pairs.py", "data/classify.py", "data/classify_sources.py",
              "data/mlm.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _canonical(node: Any) -> str:
    """``ast.dump`` without None / empty-list fields: Python 3.12 added an empty ``type_params`` to every
    def and 3.13 stopped printing empty fields, and neither should retrain every model."""
    if isinstance(node, ast.AST):
        fields = (f"{k}={_canonical(v)}" for k, v in ast.iter_fields(node) if v is not None and v != [])
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(map(_canonical, node)) + "]"
    return repr(node)


@functools.lru_cache(maxsize=256)
def _code_of(source: str) -> str:
    """A file's code without comments, formatting or docstrings (cached: run_key is asked often)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:]
    return _canonical(tree)


def _module_file(module: str) -> Path | None:
    """The file under PACKAGE_DIR of ``layerdrop.a.b`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
    parts = module.split(".")[1:]
    for candidate in (PACKAGE_DIR.joinpath(*parts).with_suffix(".py") if parts else None,
                      PACKAGE_DIR.joinpath(*parts, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """The ``layerdrop`` modules a file imports anywhere in it (functions too), with their parent packages,
    and ``from m import name`` also as ``m.name`` (a submodule, when it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if name == "layerdrop" or name.startswith("layerdrop."):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def import_closure(modules: tuple[str, ...], through: set[Path] | None = None) -> set[Path]:
    """The files of the ``layerdrop`` modules that ``modules`` import, directly or not (static imports;
    the task registry imports task modules by name, so a run names its own task's module). With
    ``through``, only the imports of those files are followed: config checking (schema.py imports every
    data module) and evaluation do not make another task's training code part of this one's."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is not None:
            files.add(path)
            if through is None or path in through:
                todo.extend(_imports(path) - seen)
    return files


def code_files(modules: tuple[str, ...] | None = None) -> list[Path]:
    """The fingerprinted files (``CODE_FILES``), all of them or those ``modules`` import."""
    paths = []
    for pattern in CODE_FILES:
        matched = sorted(PACKAGE_DIR.glob(pattern))
        if not matched:
            raise ValueError(f"CODE_FILES pattern {pattern!r} matches no file under {PACKAGE_DIR}; update CODE_FILES "
                             "in layerdrop/utils/runs.py after moving training code")
        paths += matched
    if modules is not None:
        used = import_closure(modules, through=set(paths))
        paths = [p for p in paths if p in used]
    return paths


def code_version(modules: tuple[str, ...] | None = None) -> str:
    """Fingerprint of the training code: the files of ``CODE_FILES`` that ``modules`` import (all of them
    when None). It changes with any code change there, not with comments, formatting or docstrings."""
    digest = hashlib.sha256()
    for path in code_files(modules):
        digest.update(f"{path.relative_to(PACKAGE_DIR).as_posix()}\0".encode())
        digest.update(_code_of(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:12]


def training_modules(cfg: DictConfig) -> tuple[str, ...]:
    """Where a run's training code starts: the loop, the optimizer, its task (registered by name), its
    Lightning module and its data module (named in config). A task's code version covers what these
    import, so code another task alone uses does not retrain this one's runs."""
    from layerdrop.tasks import TASKS

    return ("layerdrop.train", "layerdrop.optim", TASKS[str(cfg.task.name)].__module__,
            str(cfg.task.lit_module).rsplit(".", 1)[0], str(cfg.data._target_).rsplit(".", 1)[0])


def run_code_version(cfg: DictConfig) -> str:
    """The version of the training code a run of ``cfg`` is trained by (part of its key)."""
    return code_version(training_modules(cfg))


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """What the run key hashes: the settings that decide the trained model, and the code that trains it."""
    out: dict[str, Any] = {"code": run_code_version(cfg)}
    for section in TRAIN_SECTIONS:
        value = OmegaConf.to_container(cfg[section], resolve=True) if isinstance(cfg[section], DictConfig) else cfg[section]
        if isinstance(value, dict):
            later = LATER_DEFAULTS.get(section, {})
            value = {k: v for k, v in value.items()
                     if k not in COSMETIC.get(section, ()) and not (k in later and later[k] == v)}
        out[section] = value
    # Early stopping decides where training ends, so it decides the model; left out when off, so runs
    # made before it existed keep their keys.
    if cfg.get("early_stop_patience") is not None:
        out["early_stop_patience"] = cfg.early_stop_patience
    return out


def run_key(cfg: DictConfig) -> str:
    blob = json.dumps(training_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.runs_dir) / cfg.task.name / run_key(cfg)


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_record(folder: Path, store: Path | None, record: dict, name: str = "metrics.json") -> None:
    """``store.write_record``; a run record (``metrics.json``) first takes its earlier sessions
    (``with_sessions``)."""
    if name == "metrics.json":
        with_sessions(folder, record)
    _store.write_record(folder, store, record, name)


# ---------------------------------------------------------------------------------------------------
# Which row of which artefact a run is

#: the rows of each table; a run serves one row of an artefact (experiments/*.sh pass role=...).
#: From-scratch runs share the role ``scratch`` and are told apart by depth.
ROLES = {
    "table1": ("baseline", "layerdrop", "deep_baseline", "deep_layerdrop", "scratch", "equal_compute"),
    "table2": ("baseline", "layerdrop", "deep_layerdrop", "scratch", "equal_compute"),
    "table3": ("sum_baseline", "sum_layerdrop", "sum_deep_layerdrop", "sum_scratch", "qa_baseline", "qa_layerdrop"),
    # fine-tunings (python -m layerdrop.classify), one row per pretrained encoder and kept depth
    "table4": ("baseline", "layerdrop", "deep_layerdrop"),
    "table7": ("baseline", "layerdrop", "scratch_half", "layerdrop_half", "scratch_quarter", "layerdrop_quarter",
               "distilled_half", "distilled_quarter"),
}


def tag(record: dict, artefact: str | None, role: str | None) -> None:
    """Record that the run serves ``artefact`` (``artefacts``), as ``role`` there (``roles``). Checked before
    any training: the role must be one of the artefact's rows, and a run keeps the role it was given."""
    if role is not None:
        allowed = ROLES.get(artefact or "")
        if not allowed:
            raise ValueError(f"role={role!r} but artefact {artefact!r} has no roles (roles exist for "
                             f"{', '.join(ROLES)}); leave role null")
        if role not in allowed:
            raise ValueError(f"role {role!r} is not a row of {artefact}; allowed: {', '.join(allowed)}")
        held = record.setdefault("roles", {}).get(artefact)
        if held not in (None, role):
            raise ValueError(f"run {record['run_key']} already serves {artefact} as {held!r}; it cannot also be "
                             f"{role!r} (one trained model, one row). If {held!r} was a mistake, edit `roles` in "
                             "its metrics.json.")
        record["roles"][artefact] = role
    if artefact and artefact not in record["artefacts"]:
        record["artefacts"].append(artefact)
