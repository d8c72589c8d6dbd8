"""The CPU benchmark's measuring code: its FLOP models agree with PyTorch's FLOP counter, a share of
the peak above 100% is refused, and targets are marked met or missed from the numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from layerdrop import bench, flops
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("adaptive", [False, True])
def test_lm_flop_model_counts_what_the_model_multiplies(adaptive):
    cfg = LMConfig(vocab_size=300, n_layers=3, d_model=32, n_heads=2, d_ff=64, max_len=16, adaptive=adaptive,
                   cutoffs=[50, 150], adaptive_dropout=0.0)
    model = TransformerLM(cfg).eval()
    x = torch.randint(0, 300, (4, 16))
    x[0, :5] = 200  # every band occurs
    counted = _counted(lambda: model.nll(model(x), x))
    modelled = flops.lm_forward_flops(cfg, 3, 16, flops.band_shares(cfg, x)) * x.numel()
    assert modelled == pytest.approx(counted, rel=0.01)


def test_mt_flop_model_counts_what_the_model_multiplies():
    cfg = Seq2SeqConfig(vocab_size=100, encoder_layers=2, decoder_layers=3, d_model=32, n_heads=2, d_ff=64,
                        max_len=16)
    model = TransformerSeq2Seq(cfg).eval()
    src, tgt = torch.randint(1, 100, (3, 9)), torch.randint(1, 100, (3, 7))
    counted = _counted(lambda: model.logits(model(src, tgt)))
    assert flops.mt_forward_flops(cfg, 3, 9, 7, 2, 3) == pytest.approx(counted, rel=0.01)


def test_a_share_above_the_peak_is_refused():
    assert bench._share(200.0, 400.0) == 0.5
    with pytest.raises(bench.MeasurementError, match="120% of the measured peak"):
        bench._share(480.0, 400.0)


def test_peak_is_the_best_of_its_shapes():
    out = flops.matmul_peak(torch.float32, shapes=[(64, 64, 64), (128, 32, 64)], repeats=2)
    assert out["peak"] == max(out["64x64x64"], out["128x32x64"]) > 0


def _result(lm_share=0.55, p05=0.56, ideal05=0.55, half=1.7, ideal_half=1.75, mt_share=0.3, beam=120.0):
    train = [{"p": p, "tokens_per_s": 1000.0, "step_cost_vs_p0": c, "ideal_vs_p0": i, "mean_kept_layers": k,
              "share_of_peak": lm_share} for p, c, i, k in [(0.0, 1.0, 1.0, 6), (0.5, p05, ideal05, 3)]]
    lm = {"shape": {"n_layers": 6, "d_model": 128, "d_ff": 512, "vocab_size": 1024, "adaptive": False, "cutoffs": []},
          "batch": [32, 128], "bf16": True, "train": train,
          "eval": {"half_speedup": half, "ideal": ideal_half, "full_tokens_per_s": 1.0, "half_tokens_per_s": 1.0}}
    return {"machine": {"cpus": 2, "torch": "x", "threads": 2}, "code": "abc", "seconds": 1,
            "peak_gflops": {"bf16": 400.0, "fp32": 200.0},
            "peak_by_shape": {"start": {"bf16": {"1x1x1": 400.0, "peak": 400.0}}},
            "lm": {"default": lm, "before": copy.deepcopy(lm)},
            "mt": {"precision": "bf16-mixed", "max_tokens": 2048,
                   "shape": {"encoder_layers": 6, "decoder_layers": 6, "d_model": 128, "d_ff": 512, "vocab_size": 8000},
                   "rows": [{"p": 0.0, "target_tokens_per_s": 10.0, "speedup_vs_p0": 1.0, "share_of_peak": mt_share}]},
            "beam": {"settings": {"beam": 8, "lenpen": 0.6}, "sentences_per_s": beam, "detail": "d"}}


def _verdicts(text: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and ("**met**" in line or "**missed**" in line)]
    return ["met" if "**met**" in r else "missed" for r in rows]


def test_targets_are_marked_from_the_numbers():
    assert _verdicts(bench.render(_result())) == ["met", "met", "met", "met", "missed", "met"]
    # half depth 1.6x against an ideal of 1.75x is more than 5% short; p=0.5 0.05 away from its ideal
    assert _verdicts(bench.render(_result(half=1.6, p05=0.60, lm_share=0.4, beam=90.0))) == [
        "missed", "missed", "met", "missed", "missed", "missed"]


def test_the_equal_flops_baseline_runs_fewer_steps_the_more_layerdrop_drops():
    from layerdrop.flops import equal_flops_steps, lm_step_ratio, main

    cfg = LMConfig(vocab_size=512, n_layers=4, d_model=32, n_heads=2, d_ff=64, max_len=32, adaptive=True,
                   cutoffs=[128, 256])
    ratios = [lm_step_ratio(cfg, p, 32, [0.7, 0.2, 0.1]) for p in (0.0, 0.2, 0.5)]
    assert ratios[0] == 1.0 and 0.5 < ratios[2] < ratios[1] < 1.0  # the adaptive softmax is never dropped
    steps, ratio = equal_flops_steps(["debug=smoke", "trainer.max_steps=100"], 0.5)
    assert steps == round(100 * ratio) and 50 < steps < 100
    with pytest.raises(SystemExit, match="P=1.5: must be a LayerDrop rate"):
        main(["equal-steps", "1.5"])


def test_the_equal_flops_translation_baseline_drops_both_stacks_but_never_the_output_layer():
    from layerdrop.flops import equal_flops_steps, mt_forward_flops, seq2seq_step_ratio

    cfg = Seq2SeqConfig(vocab_size=8000, encoder_layers=6, decoder_layers=6, d_model=32, n_heads=2, d_ff=64,
                        max_len=64)
    shapes = [(10, 20, 22), (40, 5, 6)]
    assert seq2seq_step_ratio(cfg, 0.0, shapes) == 1.0
    # p = 0.5 on both stacks halves every layer's FLOPs; the embedding output layer stays whole
    output = sum(B * T * 2 * 32 * 8000 for B, T in [(10, 22), (40, 6)])
    full = sum(mt_forward_flops(cfg, *s, 6, 6) for s in shapes)
    assert seq2seq_step_ratio(cfg, 0.5, shapes) == pytest.approx(0.5 + 0.5 * output / full)
    steps, ratio = equal_flops_steps(["experiment=table1_mt", "debug=smoke_mt", "trainer.max_steps=100"], 0.5)
    assert steps == round(100 * ratio) and 50 < steps < 100


def test_a_bench_without_quality_keeps_the_last_full_run_check_and_says_which_code_measured_it(tmp_path):
    from layerdrop.utils.runs import write_json

    assert bench.kept_quality(tmp_path / "bench.json") is None  # nothing measured yet: nothing to show
    check = {"bf16": {"valid_ppl": 101.71, "steps": 4000, "run_key": "b"}, "fp32": {"valid_ppl": 101.63, "run_key": "f"},
             "relative_change": 101.71 / 101.63 - 1}
    write_json(tmp_path / "bench.json", {**_result(), "code": "old123", "bf16_full_run": check})
    kept = bench.kept_quality(tmp_path / "bench.json")
    assert kept["measured_at"] == "old123" and kept["bf16"] == check["bf16"]
    write_json(tmp_path / "bench.json", {**_result(), "code": "new456", "bf16_full_run": kept})
    assert bench.kept_quality(tmp_path / "bench.json")["measured_at"] == "old123"  # kept again: still the measuring code
    text = bench.render({**_result(), "bf16_full_run": kept})
    assert "(+0.08%; target within 1%: **met**); measured by an earlier `make bench` at code old123" in text


def test_the_step_breakdown_splits_the_profiled_time_and_rates_the_matmuls_alone():
    """The shares of a profiled training step add up to 1, the matmuls take a real part of it, and their
    own rate is the step's FLOPs over their time alone, so it exceeds the whole step's rate."""
    cfg = LMConfig(vocab_size=256, n_layers=2, d_model=64, n_heads=2, d_ff=128, max_len=32)
    x = torch.randint(0, 256, (4, 32))
    bd = bench.step_breakdown(cfg, x, bf16=False, optimizer=None, steps=2)
    assert set(bd["shares"]) == {"matmul", "casts", "optimizer", "other"}
    assert abs(sum(bd["shares"].values()) - 1) < 1e-9 and 0 < bd["shares"]["matmul"] < 1
    assert bd["shares"]["optimizer"] > 0  # AdamW's step is found by name
    step_gflops = 3 * flops.lm_forward_flops(cfg, 2, 32, flops.band_shares(cfg, x)) * x.numel() / bd["step_s"] / 1e9
    assert bd["matmul_gflops"] > step_gflops


def test_the_report_names_the_cpu_and_where_the_step_time_goes():
    r = _result()
    r["machine"].update(cpu="Some Xeon", amx_bf16=True)
    r["lm"]["default"]["breakdown"] = {"step_s": 0.2, "matmul_gflops": 300.0, "matmul_share_of_peak": 0.75,
                                       "shares": {"matmul": 0.3, "casts": 0.15, "optimizer": 0.05, "other": 0.5}}
    text = bench.render(r)
    assert "2 CPUs (Some Xeon, with AMX bf16 matrix units)" in text
    assert "matmul kernels 30%, dtype casts 15%, optimizer 5%, everything else" in text
    assert "run at 300 GFLOP/s (75% of the peak)" in text
