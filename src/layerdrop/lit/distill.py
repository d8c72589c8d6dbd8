"""A distilled student encoder (DistilBERT's recipe, Sanh et al. 2019) for Table 7 and Figure 3: the
paper only quotes DistilBERT's published numbers; training one on the same data as the LayerDrop encoder
is ours.

The student has every other layer of the teacher, initialised from them (DistilBERT: "taking one layer
out of two"), and the teacher's embeddings and masked-LM head. It trains on the same dynamically masked
blocks as the teacher did, at each masked position on the teacher's soft targets at temperature ``T``
(cross-entropy with the teacher's softened distribution, scaled by T^2 as Hinton et al.) weighted
``alpha``, plus the masked-LM loss weighted ``1 - alpha``. (DistilBERT also adds a cosine loss on hidden
states; left out, as the issue's recipe names the two losses.) The teacher is a pretraining run of the
cache (``task.module_args.teacher``: its run key, part of the student's config and so of its key); it runs
in eval mode, without gradients, and is not part of the student's checkpoints.

    python -m layerdrop.train experiment=pretrain_mlm layerdrop.p=0 model.n_layers=4 \
        task.lit_module=layerdrop.lit.distill.DistillLitModule \
        +task.module_args.teacher=$(python -m layerdrop.runkey experiment=pretrain_mlm layerdrop.p=0)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from layerdrop.lit.mlm import MLMLitModule
from layerdrop.models.checkpoint import load_model
from layerdrop.models.encoder import TransformerEncoder
from layerdrop.models.pruning import layers_to_keep, prune_model


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    """Summed over the N scored positions: alpha * T^2 * CE(teacher at T, student at T) + (1 - alpha) * NLL.
    Logits (N, V) in any float dtype; computed in fp32."""
    s, t = student_logits.float(), teacher_logits.float()
    soft = -(F.softmax(t / temperature, -1) * F.log_softmax(s / temperature, -1)).sum(-1)
    hard = F.cross_entropy(s, target, reduction="none")
    return (alpha * temperature**2 * soft + (1 - alpha) * hard).sum()


def student_from(teacher: TransformerEncoder, n_layers: int) -> TransformerEncoder:
    """The teacher with every other layer kept (evenly spaced below half), as DistilBERT's student starts."""
    return prune_model(teacher, {"encoder": layers_to_keep("every_other", teacher.config.n_layers, n_layers)})


class DistillLitModule(MLMLitModule):
    """``MLMLitModule`` with a teacher: ``teacher_path`` (its ``model.pt``; the task resolves it from
    ``teacher``, the teacher's run key), ``temperature`` and ``alpha``. Without a teacher (evaluating a
    trained student) it is the plain masked-LM module."""

    def __init__(self, model: dict, optim: dict | None = None, seed: int = 0, arch: str = "encoder",
                 mask_prob: float = 0.15, mask_frac: float = 0.8, random_frac: float = 0.1,
                 teacher: str | None = None, temperature: float = 2.0, alpha: float = 0.5,
                 teacher_path: str | None = None):
        super().__init__(model, optim, seed, arch, mask_prob, mask_frac, random_frac)
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"temperature={temperature}, alpha={alpha}: need temperature > 0 and alpha in [0, 1]")
        self._teacher: list[TransformerEncoder] = []  # a list: kept out of the module tree and its checkpoints
        if teacher_path is not None:
            if not Path(teacher_path).exists():
                raise FileNotFoundError(f"no teacher at {teacher_path}: pretrain the teacher run ({teacher}) first")
            loaded, _ = load_model(teacher_path)
            if not isinstance(loaded, TransformerEncoder):
                raise ValueError(f"{teacher_path} holds a {type(loaded).__name__}, not a pretrained encoder")
            n = self.model.config.n_layers
            if not 1 <= n <= loaded.config.n_layers:
                raise ValueError(f"model.n_layers={n}: a student needs 1 to the teacher's {loaded.config.n_layers} layers")
            start = student_from(loaded, n)
            self.model.load_state_dict(start.state_dict())  # DistilBERT's initialisation
            self._teacher = [loaded.eval().requires_grad_(False)]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if not self._teacher:
            return super().training_step(batch, batch_idx)
        teacher = self._teacher[0]
        if next(teacher.parameters()).device != batch["input"].device:
            teacher.to(batch["input"].device)
        inputs, target = self._mask(batch["input"])
        keep = target.reshape(-1) != -100
        student = self.model.mlm_logits(self.model(inputs).reshape(-1, self.model.config.d_model)[keep])
        with torch.no_grad():
            soft = teacher.mlm_logits(teacher(inputs).reshape(-1, teacher.config.d_model)[keep])
        h = self.hparams
        loss_sum = distill_loss(student, soft, target.reshape(-1)[keep], h.temperature, h.alpha)
        n = keep.sum()
        self.tokens_seen += batch["input"].numel() * self.trainer.world_size
        self.log_training(loss_sum, n)
        return self.update_loss(loss_sum, n)
