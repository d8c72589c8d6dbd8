"""The GPU benchmark's code, run on the CPU with tiny shapes (CI never has a GPU), and its no-GPU file."""

import pytest

from layerdrop import bench_gpu

TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "vocab_size": 300, "cutoffs": [50, 150], "max_len": 32}


def _tiny(experiment: str, depth: int, p: float):
    extra = {k: v for k, v in TINY.items() if not (k == "cutoffs" and experiment == "table1_mt")}
    return bench_gpu.paper_model(experiment, depth, p, extra)


@pytest.mark.parametrize("experiment", ["table2_lm", "table1_mt"])
def test_training_speed_counts_only_the_flops_of_the_layers_that_ran(experiment):
    full = bench_gpu.train_speed(_tiny(experiment, 4, 0.0), "cpu", tokens=64, steps=2, seq_len=32)
    dropped = bench_gpu.train_speed(_tiny(experiment, 4, 0.5), "cpu", tokens=64, steps=2, seq_len=32)
    assert full["batch"] == [2, 32] and full["tokens_per_s"] > 0
    # FLOPs per step: a LayerDrop step skips layers, so it executes fewer FLOPs than a full step
    full_flops = full["model_flops_per_s"] * full["step_s"]
    dropped_flops = dropped["model_flops_per_s"] * dropped["step_s"]
    assert dropped_flops < full_flops


def test_paper_depth_is_the_default_and_evaluation_prunes_every_stack_to_half():
    model = bench_gpu.paper_model("table1_mt", None, 0.0, {k: v for k, v in TINY.items() if k != "cutoffs"})
    assert (len(model.encoder), len(model.decoder)) == (6, 6)
    e = bench_gpu.eval_speed(model, "cpu", tokens=64, seq_len=16, repeats=1)
    assert 1.5 < e["ideal"] < 2.0 and e["speedup"] > 0


def test_without_cuda_the_file_says_no_gpu_result_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: False)
    bench_gpu.main(["--out", str(tmp_path)])
    text = (tmp_path / "gpu.md").read_text()
    assert "No CUDA device was available" in text and "TFLOP" not in text


def test_a_gpu_report_shows_the_tests_the_utilisation_and_a_failed_dry_run():
    rows = [{"model": "m", "tokens": 3072, "p": 0.5, "tokens_per_s": 1000.0, "step_s": 0.1,
             "model_flops_per_s": 5e13, "cost": 0.6}]
    evals = [{"model": "m", "tokens": 4096, "full_tokens_per_s": 100.0, "pruned_tokens_per_s": 180.0,
              "speedup": 1.8, "ideal": 1.9}]
    text = bench_gpu.render("H100", (0, "5 passed"), rows, 1e14, evals, (1, "boom"), "abc123")
    assert "| m | 3,072 | 0.5 | 1,000 | 100.0 | 50.0 | 50% | 0.60x |" in text
    assert "| m | 4,096 | 100 | 180 | 1.80x | 1.90x |" in text
    assert "gpu-marked tests: passed" in text and "FAILED (exit 1)" in text and "commit abc123" in text
