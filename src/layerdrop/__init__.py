"""LayerDrop reproduction: structured dropout and on-demand depth pruning (arXiv:1909.11556)."""

__version__ = "0.1.0"
