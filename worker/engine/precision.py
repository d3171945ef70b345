"""fp32, bf16 autocast, and fp16 autocast with dynamic loss scaling (fp32 master weights)."""

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    name: str
    device_type: str
    scaler: torch.amp.GradScaler

    def autocast(self) -> AbstractContextManager[object]:
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])

    @property
    def scaled(self) -> bool:
        return self.scaler.is_enabled()


def build_precision(name: str, device: torch.device) -> Precision:
    # Only fp16 needs loss scaling: its 5 exponent bits underflow small gradients.
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    return Precision(name=name, device_type=device.type, scaler=scaler)
