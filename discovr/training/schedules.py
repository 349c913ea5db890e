"""Per-optimiser-step schedules of DISCOVR pretraining (docs/pretraining.md, departures 1, 2 and 6).

Every schedule is a function of the optimiser step only, so a resumed run needs nothing but the step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base: float, final: float, start: float = 0.0) -> float:
    """Linear warmup from `start` to `base` over `warmup_steps`, then cosine from `base` to `final` at `total_steps`."""
    if step < warmup_steps:
        return start + (base - start) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from `start` to `end` over `warmup_steps`, then constant at `end`."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


@dataclass(frozen=True)
class PretrainSchedules:
    """Learning rate, weight decay, teacher momentum and teacher temperature, indexed by optimiser step.

    Lengths are derived from the configured epochs and optimiser steps per epoch (batches per epoch divided by
    the gradient-accumulation steps), never hard-coded.
    """

    steps_per_epoch: int
    epochs: int
    lr: float
    min_lr: float = 1e-6
    warmup_epochs: float = 40
    weight_decay: float = 0.05
    weight_decay_end: float = 0.05
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    warmup_teacher_temperature: float = 0.04
    teacher_temperature: float = 0.07
    warmup_teacher_temperature_epochs: float = 30

    def __post_init__(self):
        if self.steps_per_epoch < 1 or self.epochs < 1:
            raise ValueError(f"steps_per_epoch and epochs must be >= 1, got {self.steps_per_epoch}, {self.epochs}")

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def warmup_steps(self) -> int:
        """Optimiser steps of the learning-rate warm-up."""
        return self._steps(self.warmup_epochs)

    def _steps(self, epochs: float) -> int:
        return min(self.total_steps, int(round(epochs * self.steps_per_epoch)))

    def learning_rate(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.lr, self.min_lr)

    def weight_decay_at(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, 0, self.weight_decay, self.weight_decay_end)

    def teacher_momentum(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, 0, self.momentum_teacher, self.momentum_teacher_end)

    def teacher_temp(self, step: int) -> float:
        return linear_warmup(
            step, self._steps(self.warmup_teacher_temperature_epochs), self.warmup_teacher_temperature,
            self.teacher_temperature,
        )

    def at(self, step: int) -> dict[str, float]:
        return {
            "lr": self.learning_rate(step),
            "weight_decay": self.weight_decay_at(step),
            "teacher_momentum": self.teacher_momentum(step),
            "teacher_temperature": self.teacher_temp(step),
        }
