"""The layer-use probe (python -m layerdrop.metrics.layer_use): removing a layer that does nothing changes
nothing, removing one that works does, and a model that reads its source is hurt by another sentence's."""

import json
import math

import pytest
import torch

from layerdrop.metrics.layer_use import encoder_spread, layer_use, main, perplexity, swap_sources
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq

PAD = 0


def tiny() -> TransformerSeq2Seq:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=30, encoder_layers=3, decoder_layers=2, d_model=16, n_heads=2, d_ff=32,
                        max_len=32, pad_id=PAD, dropout=0.0, attn_dropout=0.0, pre_norm=True)
    model = TransformerSeq2Seq(cfg)
    with torch.no_grad():  # larger weights than the init, so every layer's update is far from nothing
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model.eval()


def batches(n=3, rows=4, width=7) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        src = torch.randint(3, 30, (rows, width), generator=g)
        tgt = torch.randint(3, 30, (rows, width), generator=g)
        tgt_out = tgt.clone()
        tgt_out[0, -2:] = -100  # padding in the target is not scored
        out.append({"src": src, "tgt_in": tgt, "tgt_out": tgt_out})
    return out


def silence(layer) -> None:
    """A pre-norm layer whose every residual update is zero: the identity."""
    with torch.no_grad():
        for block in (layer.attn.out, layer.ffn.fc2):
            block.weight.zero_()
            block.bias.zero_()


def test_a_silent_layer_removed_changes_nothing_and_a_working_one_does():
    model, data = tiny(), batches()
    silence(model.encoder[1])
    use = layer_use(model, data)
    enc = use["stacks"]["encoder"]
    assert enc["without"][1] == pytest.approx(use["full"], rel=1e-5)
    assert abs(enc["without"][0] / use["full"] - 1) > 1e-3 and abs(enc["without"][2] / use["full"] - 1) > 1e-3
    assert len(use["stacks"]["decoder"]["only"]) == 2
    # the silent layer kept alone is the model with no encoder layer at all
    assert enc["only"][1] != pytest.approx(use["full"], rel=1e-3)


def test_perplexity_skips_unscored_targets_and_matches_a_direct_computation():
    model, data = tiny(), batches(n=1)
    b = data[0]
    with torch.no_grad():
        logits = model.logits(model(b["src"], b["tgt_in"]))
    keep = b["tgt_out"] != -100
    nll = torch.nn.functional.cross_entropy(logits[keep], b["tgt_out"][keep])
    assert perplexity(model, data) == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_wrong_sources_hurt_a_model_that_reads_them_and_one_row_batches_are_left_out():
    data = batches()
    swapped = swap_sources(data + [{k: v[:1] for k, v in data[0].items()}])
    assert len(swapped) == len(data)
    assert torch.equal(swapped[0]["src"][1], data[0]["src"][0])
    assert torch.equal(swapped[0]["tgt_out"], data[0]["tgt_out"])
    model = tiny()
    assert perplexity(model, swapped) != pytest.approx(perplexity(model, data), rel=1e-3)
    with torch.no_grad():  # cross-attention silenced: the source cannot matter
        for layer in model.decoder:
            layer.cross_attn.out.weight.zero_()
            layer.cross_attn.out.bias.zero_()
    assert perplexity(model, swapped) == pytest.approx(perplexity(model, data), rel=1e-5)


def test_the_encoder_spread_is_near_zero_only_for_an_encoder_that_outputs_one_vector():
    model, data = tiny(), batches()
    assert encoder_spread(model, data) > 0.1
    assert layer_use(model, data)["encoder_spread"] == pytest.approx(encoder_spread(model, data))
    padded = [dict(b, src=torch.cat([b["src"], torch.full((b["src"].size(0), 3), PAD)], 1)) for b in data]
    assert encoder_spread(model, padded) == pytest.approx(encoder_spread(model, data), rel=1e-4)  # padding left out
    with torch.no_grad():  # the final norm's gain zeroed: every position's output is its bias, one vector
        model.encoder_norm.weight.zero_()
        model.encoder_norm.bias.fill_(0.5)
    assert encoder_spread(model, data) < 1e-6


def test_the_command_refuses_a_run_of_another_task_a_run_without_weights_and_no_batches(tmp_path):
    run = tmp_path / "lm" / "abc"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"task": "lm", "config": {}}))
    with pytest.raises(ValueError, match="task 'lm'"):
        main([str(run), "--records-dir", str(tmp_path / "store")])
    (run / "metrics.json").write_text(json.dumps({"task": "sum", "config": {}}))
    with pytest.raises(FileNotFoundError, match="need_weights=true"):
        main([str(run), "--records-dir", str(tmp_path / "store")])
    with pytest.raises(SystemExit):
        main([str(run), "--batches", "0"])
    (run / "model.pt").write_bytes(b"")  # never read: the missing probe is named first
    with pytest.raises(FileNotFoundError, match="--spread-only adds to a finished probe"):
        main([str(run), "--spread-only", "--records-dir", str(tmp_path / "store")])


def test_the_report_names_a_stack_that_works_as_one_layer_and_only_that(tmp_path):
    from pathlib import Path

    from layerdrop.report.layer_use import build

    record = json.loads((Path(__file__).parents[1] / "records/sum/4a0db63b1414/metrics.json").read_text())
    run = tmp_path / "store" / "sum" / record["run_key"]
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(record))
    use = {"full": 50.0, "wrong_source": 90.0,
           "stacks": {"encoder": {"without": [52.0, 50.1, 50.0], "only": [60.0, 58.0, 50.4]},  # layer 2 alone: +0.8%
                      "decoder": {"without": [55.0, 53.0], "only": [51.0, 70.0]}}}             # layer 0 alone: +2%
    (run / "layer_use.json").write_text(json.dumps(use))
    assert build(tmp_path / "store", tmp_path / "out", "cpu") == 1
    page = (tmp_path / "out" / "layer_use.md").read_text()
    assert "its encoder works as one layer: layer 2 alone scores 50.4 against 50.0 for all 3" in page
    assert "its decoder works as one layer" not in page
    assert "| 52.0, 50.1, 50.0 | 60.0, 58.0, 50.4 |" in page
    assert page.endswith("in effect a language model of the target side):\n\n- none.\n")  # wrong sources: +80%
    use["wrong_source"] = 51.0  # +2%: the model hardly reads its source
    (run / "layer_use.json").write_text(json.dumps(use))
    build(tmp_path / "store", tmp_path / "out", "cpu")
    page = (tmp_path / "out" / "layer_use.md").read_text()
    assert "(sum, pre-norm, LayerDrop 0.2, 6,000 steps): wrong sources score 51.0 against 50.0 (+2.0%)." in page
    assert "| 50.0 | 51.0 | - | encoder |" in page  # probed before the encoder's spread was measured
    use["encoder_spread"] = 1.6e-8
    (run / "layer_use.json").write_text(json.dumps(use))
    build(tmp_path / "store", tmp_path / "out", "cpu")
    page = (tmp_path / "out" / "layer_use.md").read_text()
    assert "| 50.0 | 51.0 | 1.6e-08 | encoder |" in page
    assert "wrong sources score 51.0 against 50.0 (+2.0%); its encoder's output spread is 1.6e-08." in page
    assert f"All 1 runs come from one version of the training code: `{record['code_version']}`" in page
    assert build(tmp_path / "store", tmp_path / "paper", "paper") == 0  # another scale's runs are not shown


def test_a_page_over_several_corpora_names_each():
    from layerdrop.report.figures import provenance

    def record(source):
        return {"train": {"wall_s": 60.0, "tokens_seen": 10}, "eval": [], "machine": {"cpus": 2, "torch": "t"},
                "data": {"provenance": {"source": source}}}

    assert "; data sum-pairs; 2 trained models" in provenance([record("sum-pairs")] * 2, "cpu")
    both = provenance([record("sum-pairs"), record("qa-pairs"), record("sum-pairs")], "cpu")
    assert "; data qa-pairs (1 run), sum-pairs (2 runs); 3 trained models" in both
