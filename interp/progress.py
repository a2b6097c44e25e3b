"""Progress for long work: a tqdm bar over named stages (a study's sweeps, the demo's steps)."""

from __future__ import annotations

__all__ = ["Stages"]


class Stages:
    """A progress bar over a study's stages: ``stage(label)`` ends the one before and starts the
    next; ``stage.close()`` ends the last."""

    def __init__(self, name: str, total: int, progress: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=name, disable=not progress, dynamic_ncols=True)
        self.started = False

    def __call__(self, label: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(label)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()
