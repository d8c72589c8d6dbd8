"""The GPU benchmark's code, run on the CPU with tiny shapes (CI never has a GPU), and its no-GPU file."""

from layerdrop import bench_gpu

TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "vocab_size": 300, "cutoffs": [50, 150], "max_len": 32}


def test_training_speed_is_measured_for_both_paper_shapes_at_two_rates():
    for experiment in ("table2_lm", "table1_mt"):
        for p in (0.0, 0.5):
            model = bench_gpu.paper_model(experiment, 2, p, {k: v for k, v in TINY.items()
                                                             if not (k == "cutoffs" and experiment == "table1_mt")})
            depths = [len(s) for s in (getattr(model, n, None) for n in ("layers", "encoder", "decoder")) if s]
            assert set(depths) == {2}
            r = bench_gpu.train_speed(model, "cpu", tokens=32, steps=1)
            assert r["tokens_per_s"] > 0 and r["model_flops_per_s"] > 0


def test_without_cuda_the_file_says_no_gpu_result_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_gpu.torch.cuda, "is_available", lambda: False)
    bench_gpu.main(["--out", str(tmp_path)])
    text = (tmp_path / "gpu.md").read_text()
    assert "No CUDA device was available" in text and "TFLOP" not in text


def test_a_gpu_report_shows_the_tests_and_the_utilisation():
    rows = [{"model": "m", "depth": 4, "p": 0.5, "tokens_per_s": 1000.0, "model_flops_per_s": 5e13, "cost": 0.6}]
    text = bench_gpu.render("H100", (0, "5 passed"), rows, peak=1e14)
    assert "passed" in text and "| m | 4 | 0.5 | 1,000 | 50.0 | 50% | 0.60x |" in text
