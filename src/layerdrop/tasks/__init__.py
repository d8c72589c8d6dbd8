"""Task families behind one seam (``tasks/base.py``); each module here registers its tasks by name."""

from layerdrop.tasks.base import SPLITS, TASKS, Task, get_task, register_task

__all__ = ["SPLITS", "TASKS", "Task", "get_task", "register_task"]
