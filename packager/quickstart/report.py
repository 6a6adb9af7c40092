"""What the quickstart reports: one :class:`StepResult` per step and the whole run as a :class:`Report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Status = Literal["ok", "failed", "skipped"]


@dataclass
class StepResult:
    """One step: ``ok``, ``failed`` (``error`` says why and what to do) or ``skipped`` (``error`` says why)."""

    name: str
    title: str
    status: Status = "ok"
    seconds: float = 0.0
    artefact: str = ""  # what it made: a model id, a digest, a file, a URL
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "artefact": self.artefact,
            "details": self.details,
            "error": self.error,
        }


@dataclass
class Report:
    """The whole run: where, which services were used, the steps, and the three accuracies."""

    directory: str
    services: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    def accuracy(self) -> dict[str, float | None]:
        """Test-set accuracy of the float model, the INT8 model and the FPGA emulation (None when not run)."""

        def get(step: str, key: str) -> float | None:
            found = self.step(step)
            return found.details.get(key) if found is not None and found.ok else None

        return {
            "float": get("train", "accuracy"),
            "int8": get("quantize", "accuracy"),
            "fpga_emulated": get("fpga", "accuracy"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "directory": self.directory,
            "seconds": round(self.seconds, 3),
            "services": self.services,
            "accuracy": self.accuracy(),
            "steps": [s.to_dict() for s in self.steps],
        }


class Listener(Protocol):
    """Progress sink: told when a step starts, what it is doing, and when it ends."""

    def started(self, name: str, title: str) -> None: ...

    def note(self, name: str, text: str) -> None: ...

    def finished(self, result: StepResult) -> None: ...


class NullListener:
    def started(self, name: str, title: str) -> None:
        pass

    def note(self, name: str, text: str) -> None:
        pass

    def finished(self, result: StepResult) -> None:
        pass
