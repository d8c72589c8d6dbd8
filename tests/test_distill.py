"""The distilled student (DistilBERT's recipe): its loss, its initialisation from every other teacher layer,
the teacher kept out of its checkpoints, and a teacher -> student run through train() on offline data."""

import pytest
import torch
import torch.nn.functional as F

from layerdrop.config import load_config
from layerdrop.lit.distill import DistillLitModule, distill_loss, student_from
from layerdrop.models.checkpoint import save_model
from layerdrop.models.encoder import EncoderConfig, TransformerEncoder
from layerdrop.schema import check_config

V = 30


def teacher() -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(EncoderConfig(vocab_size=V + 1, n_layers=4, d_model=16, n_heads=2, d_ff=32, max_len=12,
                                            dropout=0.0, attn_dropout=0.0)).eval()


def test_the_loss_mixes_soft_targets_and_the_masked_lm_loss():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, V), torch.randn(5, V), torch.randint(0, V, (5,))
    assert torch.allclose(distill_loss(s, t, y, 2.0, 0.0), F.cross_entropy(s, y, reduction="sum"))
    soft = -(F.softmax(t / 2, -1) * F.log_softmax(s / 2, -1)).sum()
    assert torch.allclose(distill_loss(s, t, y, 2.0, 1.0), 4 * soft)
    # the soft part is smallest, with a zero gradient, where the student equals the teacher
    student = t.clone().requires_grad_(True)
    distill_loss(student, t, y, 2.0, 1.0).backward()
    assert student.grad.abs().max() < 1e-5 and distill_loss(t, t, y, 2.0, 1.0) < distill_loss(s, t, y, 2.0, 1.0)


def test_the_student_starts_from_every_other_teacher_layer_and_the_teacher_is_not_saved(tmp_path):
    big = teacher()
    save_model(tmp_path / "teacher.pt", big)
    lit = DistillLitModule(model=dict(vocab_size=V + 1, n_layers=2, d_model=16, n_heads=2, d_ff=32, max_len=12),
                           teacher="k", teacher_path=str(tmp_path / "teacher.pt"))
    start = student_from(big, 2)
    assert all(torch.equal(a, b) for a, b in zip(lit.model.state_dict().values(), start.state_dict().values(), strict=True))
    assert torch.equal(lit.model.layers[1].ffn.fc1.weight, big.layers[2].ffn.fc1.weight)  # layers 0 and 2
    assert not any("teacher" in k for k in lit.state_dict())  # not in the student's checkpoints
    with pytest.raises(FileNotFoundError, match="no teacher at .*gone.pt: pretrain the teacher run \\(k\\)"):
        DistillLitModule(model=dict(vocab_size=V + 1, n_layers=2, d_model=16, n_heads=2, d_ff=32, max_len=12),
                         teacher="k", teacher_path=str(tmp_path / "gone.pt"))


def test_a_student_without_a_teacher_is_refused_at_config_time():
    with pytest.raises(ValueError, match="task.module_args.teacher: a distilled student needs its teacher's run key"):
        check_config(load_config(["experiment=pretrain_mlm", "task.lit_module=layerdrop.lit.distill.DistillLitModule"]))


def test_teacher_then_student_through_train(tmp_path):
    from layerdrop.train import train
    from layerdrop.utils.runs import run_key

    base = ["experiment=pretrain_mlm", "debug=smoke_mlm", f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs",
            "logger=none", "layerdrop.p=0", "prune.splits=[valid]"]
    parent = train(load_config([*base, "prune.depths=[2]"]))
    student_cfg = load_config([*base, "model.n_layers=2", "prune.depths=[1]",
                               "task.lit_module=layerdrop.lit.distill.DistillLitModule",
                               f"+task.module_args.teacher={parent['run_key']}"])
    student = train(student_cfg)
    assert student["config"]["task"]["module_args"]["teacher"] == parent["run_key"] == run_key(load_config([*base, "prune.depths=[2]"]))
    assert student["train"]["steps"] == 6 and {e["depth"] for e in student["eval"]} == {1, 2}
    other = load_config([*base, "model.n_layers=2", "task.lit_module=layerdrop.lit.distill.DistillLitModule",
                         "+task.module_args.teacher=another"])
    assert run_key(other) != student["run_key"]  # another teacher, another student
