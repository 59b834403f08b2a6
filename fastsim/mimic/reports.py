"""What distillation bought: parameters and inference time of the teacher against the mimicked model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from ..speech import whisper
from ..speech.inference import count_parameters
from ..speech.whisper import is_whisper


@dataclass
class TimeReport:
    device: str
    method: str
    batch: int
    clip_seconds: float
    full_s: float  # seconds per pass, whole model
    mimicked_s: float
    stack_s: float  # seconds per pass, stack alone
    mimic_s: float

    def per_audio_second(self, s: float) -> float:
        """ms per second of audio."""
        return 1000 * s / (self.batch * self.clip_seconds)

    @property
    def reduction(self) -> float:
        return 1 - self.mimicked_s / self.full_s

    @property
    def stack_reduction(self) -> float:
        return 1 - self.mimic_s / self.stack_s

    def summary(self) -> str:
        pa = self.per_audio_second
        return (f"inference time ({self.method}, batch {self.batch} x {self.clip_seconds:g} s, {self.device}): "
                f"{pa(self.full_s):.2f} -> {pa(self.mimicked_s):.2f} ms per s of audio "
                f"({1000 * self.full_s / self.batch:.2f} -> {1000 * self.mimicked_s / self.batch:.2f} ms per clip), "
                f"{100 * self.reduction:.1f} % less; the stack alone: {pa(self.stack_s):.3f} -> {pa(self.mimic_s):.3f} ms "
                f"per s of audio ({100 * self.stack_reduction:.1f} % less)")

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(reduction=self.reduction, stack_reduction=self.stack_reduction,
                 full_ms_per_audio_s=self.per_audio_second(self.full_s),
                 mimicked_ms_per_audio_s=self.per_audio_second(self.mimicked_s))
        return d


@dataclass
class ParameterReport:
    """Parameters of the whole teacher (CNN front end included) against the whole mimicked model."""

    teacher: int
    mimicked: int
    stack: int
    mimic: int

    @property
    def reduction(self) -> float:
        return 1.0 - self.mimicked / self.teacher

    def summary(self) -> str:
        return (f"parameters: {self.teacher / 1e6:.2f} M -> {self.mimicked / 1e6:.2f} M "
                f"({100 * self.reduction:.1f} % fewer; the {self.stack / 1e6:.2f} M-parameter stack is replaced by a "
                f"{self.mimic / 1e3:.1f} k-parameter mimic)")


def parameter_report(teacher: nn.Module, mimicked: nn.Module) -> ParameterReport:
    """Whole teacher against the model ``replace_stack`` returned (its CNN, feature projection,
    adapter and mimic; the teacher's training-only masked_spec_embed is not in it)."""
    return ParameterReport(teacher=count_parameters(teacher), mimicked=count_parameters(mimicked),
                           stack=_stack_parameters(teacher), mimic=count_parameters(mimicked.mimic))


def _stack_parameters(teacher: nn.Module) -> int:
    """Parameters of what the mimic replaces: ``teacher.encoder``; for Whisper its layers and final norm."""
    if is_whisper(teacher):
        return whisper.stack_parameters(teacher)
    return count_parameters(teacher.encoder)
