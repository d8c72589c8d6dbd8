"""What the machine a run trains on means for it: bf16 autocast on a CPU that emulates bf16 is many times
slower than fp32. By default its matrix products then go through fp32 GEMMs (tests/test_bf16_gemm.py);
where the user keeps PyTorch's kernels (LAYERDROP_BF16_GEMM=native) they are told, before any work and
in the backlog."""

import logging
import math

import pytest

from layerdrop import schema
from layerdrop.backlog import Run, backlog, machine_note, script_path
from layerdrop.config import load_config
from layerdrop.utils import bf16, machine
from layerdrop.utils.runs import write_json


def test_the_bf16_slowdown_is_measured_once_per_process():
    slowdown = machine.bf16_slowdown()
    assert math.isfinite(slowdown) and slowdown > 0
    assert machine.bf16_slowdown() == slowdown  # cached: one measurement
    assert machine.machine_info()["bf16_matmul_vs_fp32"] == round(slowdown, 2)  # every record says it


def test_the_bf16_slowdown_is_measured_on_one_thread_and_the_thread_count_restored(monkeypatch):
    """A busy core stalls a multi-threaded GEMM for the scheduler's time slice, which would make an fp32
    product look as slow as emulated bf16 beside a training: every product timed runs on one thread."""
    import torch

    seen, mm = [], torch.mm
    monkeypatch.setattr(torch, "mm", lambda x, y: seen.append((x.dtype, torch.get_num_threads())) or mm(x, y))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    machine.bf16_slowdown.cache_clear()
    try:
        machine.bf16_slowdown(n=16, repeats=2)
        assert torch.get_num_threads() == 2
    finally:
        machine.bf16_slowdown.cache_clear()
        torch.set_num_threads(threads)
    assert {dtype for dtype, _ in seen} == {torch.bfloat16, torch.float32} and len(seen) == 6
    assert {n for _, n in seen} == {1}


@pytest.fixture
def emulated_bf16(monkeypatch):
    """A CPU that emulates bf16, its matrix products left to PyTorch."""
    monkeypatch.setattr(machine, "bf16_slowdown", lambda: 35.0)
    monkeypatch.setattr(schema, "_WARNED", set())
    monkeypatch.setenv(bf16.ENV, "native")


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(machine, "bf16_slowdown", lambda: 0.4)
    monkeypatch.setattr(schema, "_WARNED", set())


def test_bf16_on_a_cpu_that_emulates_it_is_warned_with_the_fp32_override(emulated_bf16):
    message = machine.slow_bf16_warning("cpu", "bf16-mixed")
    assert "35x" in message and "LAYERDROP_BF16_GEMM" in message
    assert machine.slow_bf16_warning("auto", "bf16-mixed") is not None  # no CUDA in the test suite
    assert machine.slow_bf16_warning("cpu", "32-true") is None
    assert machine.slow_bf16_warning("gpu", "bf16-mixed") is None


def test_bf16_on_a_cpu_with_bf16_units_is_not_warned(native_bf16):
    assert machine.slow_bf16_warning("cpu", "bf16-mixed") is None


def test_the_config_check_warns_once_and_the_run_goes_on(emulated_bf16, caplog):
    cfg = load_config(["experiment=table2_lm"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "cpu"
    with caplog.at_level(logging.WARNING, logger="layerdrop"):
        schema.check_config(cfg)
        schema.check_config(cfg)
    warned = [r for r in caplog.records if "without bf16 units" in r.getMessage()]
    assert len(warned) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="layerdrop"):
        schema.check_config(load_config(["experiment=table2_lm", "trainer.precision=32-true"]))
    assert not [r for r in caplog.records if "without bf16 units" in r.getMessage()]


def test_the_config_check_says_nothing_where_bf16_has_units(native_bf16, caplog):
    with caplog.at_level(logging.WARNING, logger="layerdrop"):
        schema.check_config(load_config(["experiment=table2_lm"]))
    assert not [r for r in caplog.records if "without bf16 units" in r.getMessage()]


def test_cpus_names_an_emulated_bf16():
    m = {"cpus": 2, "cpu": "AMD EPYC", "amx_bf16": False}
    assert machine.cpus(m) == "2 CPUs (AMD EPYC, no AMX)"  # records from before the measurement
    assert machine.cpus({**m, "bf16_matmul_vs_fp32": 31.6}) == "2 CPUs (AMD EPYC, no AMX, bf16 emulated)"
    assert "emulated" not in machine.cpus({**m, "amx_bf16": True, "bf16_matmul_vs_fp32": 0.3})
    assert machine.cpus({**m, "bf16_matmul_vs_fp32": 22.0, "bf16_gemm": "fp32"}) == (
        "2 CPUs (AMD EPYC, no AMX, bf16 emulated, bf16 autocast's matrix products through fp32 GEMMs)")


def test_the_backlog_names_where_its_estimates_come_from_and_warns_of_emulated_bf16(tmp_path, emulated_bf16, monkeypatch):
    paths = [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.records_dir={tmp_path / 'records'}"]
    found, _ = backlog(script_path("figure4_lm"), "cpu", ["seed=1", *paths])
    note = machine_note(found)
    assert "Estimates measured on no stored run" in note and "This machine: " in note
    assert "**Warning**" in note and "LAYERDROP_BF16_GEMM" in note
    fp32, _ = backlog(script_path("figure4_lm"), "cpu", ["seed=1", "trainer.precision=32-true", *paths])
    assert "**Warning**" not in machine_note(fp32)
    monkeypatch.setenv(bf16.ENV, "auto")  # the default: fp32 GEMMs, said without a warning
    note = machine_note(found)
    assert "**Warning**" not in note and "fp32 GEMMs" in note
    done = [Run(r.key, r.task, r.store, r.role, r.seed, "done", r.config, r.overrides) for r in found]
    assert machine_note(done) is None  # nothing left to train: nothing to say
    # a stored run of the same task, trained on another CPU: the estimates now come from it
    first = found[0]
    write_json(tmp_path / "records" / "lm" / first.key / "metrics.json",
               {"run_key": first.key, "config": first.config, "train": {"wall_s": 600.0, "steps": 5000}, "eval": [],
                "machine": {"cpus": 2, "cpu": "Intel(R) Xeon(R) Processor", "amx_bf16": True}})
    found, _ = backlog(script_path("figure4_lm"), "cpu", ["seed=1", *paths])
    note = machine_note(found)
    assert "Estimates measured on 2 CPUs (Intel(R) Xeon(R) Processor, with AMX bf16 matrix units)." in note
    assert "fp32 GEMMs" in note and "take longer than the estimates measured on a CPU with AMX" in note
    # another run of the task made on this CPU: it gives the estimates (not the median with the Xeon's), and
    # the note names this CPU alone
    monkeypatch.setattr(machine, "cpu_model", lambda: {"cpu": "AMD EPYC", "amx_bf16": False})
    twin = found[1]
    write_json(tmp_path / "records" / "lm" / twin.key / "metrics.json",
               {"run_key": twin.key, "config": twin.config, "train": {"wall_s": 4500.0, "steps": 5000}, "eval": [],
                "machine": {"cpus": 2, "cpu": "AMD EPYC", "amx_bf16": False}})
    found, _ = backlog(script_path("figure4_lm"), "cpu", ["seed=1", *paths])
    left = [r for r in found if r.state == "to train"]
    assert left and all(r.estimate_s == pytest.approx(4500.0) for r in left)  # 5,000 steps at this CPU's pace
    note = machine_note(found)
    assert "Estimates measured on 2 CPUs (AMD EPYC, no AMX)." in note
    assert "fp32 GEMMs" in note and "take longer" not in note  # this CPU's own pace
