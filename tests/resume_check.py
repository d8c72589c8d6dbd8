"""The crash that the resume tests (tests/test_train.py on the CPU, tests/test_gpu.py on CUDA) interrupt a
run with: the LM's training step raises at a given step, and records the steps and batches it trained."""

from __future__ import annotations

from layerdrop.lit.lm import LMLitModule


def crash_at(monkeypatch, step: int, on_batch=None) -> tuple[list[tuple[int, list[int]]], list[bool]]:
    """Patch ``LMLitModule.training_step`` to raise at ``step`` while ``crash[0]`` is true. Returns
    ``(seen, crash)``: ``seen`` gets ``(global_step, first token of each row)`` of every step trained;
    ``on_batch(batch)`` runs first on every batch (a check of where it lives, say)."""
    original = LMLitModule.training_step
    seen: list[tuple[int, list[int]]] = []
    crash = [True]

    def training_step(self, batch, batch_idx):
        if on_batch is not None:
            on_batch(batch)
        if crash[0] and self.global_step == step:
            raise RuntimeError("simulated crash")
        seen.append((self.global_step, batch["input"][:, 0].tolist()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(LMLitModule, "training_step", training_step)
    return seen, crash
