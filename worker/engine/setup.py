"""Turn a JobSpec into the pieces the loop needs, each from its registry."""

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.spec import JobSpec
from worker.datasets import DataBundle, load_data
from worker.engine.precision import Precision, build_precision
from worker.engine.steps import STEPS, StepFn, StepStats, trainable
from worker.nets import build_net
from worker.strategies.clipping import Clipper, build_clipper
from worker.strategies.init import apply_init
from worker.strategies.optimizers import build_optimizer
from worker.strategies.regularizers import Regularizer, build_regularizer
from worker.strategies.schedules import Schedule, build_schedule


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the spec asks for device 'cuda' but this worker has no CUDA device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class DeviceData:
    """The data set on the device as tensors, batched by index (no DataLoader workers)."""

    def __init__(self, bundle: DataBundle, device: torch.device, batch_size: int, seed: int):
        self.bundle = bundle
        self.x_train = bundle.x_train.to(device)
        self.y_train = bundle.y_train.to(device)
        self.x_val = bundle.x_val.to(device)
        self.y_val = bundle.y_val.to(device)
        self.batch_size = min(batch_size, len(self.x_train))
        self.steps_per_epoch = math.ceil(len(self.x_train) / self.batch_size)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def epoch_batches(self):  # type: ignore[no-untyped-def]
        order = torch.randperm(
            len(self.x_train), generator=self.generator, device=self.x_train.device
        )
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x_train[index], self.y_train[index]


@dataclass
class TrainingRun:
    spec: JobSpec
    device: torch.device
    data: DeviceData
    net: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    clipper: Clipper
    precision: Precision
    total_steps: int
    # the optimizer's side (worker/engine/steps.py): the loss it minimizes (label smoothing;
    # `loss_fn` stays the plain loss for evaluation), its step function, regularization, counters
    objective: nn.Module | None = None
    step: StepFn | None = None
    regularizer: Regularizer = field(default_factory=Regularizer)
    stats: StepStats | None = None
    params: list[nn.Parameter] = field(default_factory=list)

    @property
    def classification(self) -> bool:
        return self.data.bundle.kind == "classification"


def build_run(spec: JobSpec, *, data_root: Path, device: torch.device | None = None) -> TrainingRun:
    device = device or resolve_device(spec.device)
    torch.manual_seed(spec.seed)
    bundle = load_data(spec.data, seed=spec.seed, data_root=data_root)
    traits = spec.optimizer.args  # full-batch optimizers see the whole training set per step
    batch_size = len(bundle.x_train) if traits.full_batch else spec.data.batch_size
    data = DeviceData(bundle, device, batch_size, spec.seed)
    net = build_net(spec.model, bundle.input_shape, bundle.num_outputs)
    apply_init(net, spec.init)
    net = net.to(device)
    total_steps = spec.max_steps or spec.epochs * data.steps_per_epoch
    classification = bundle.kind == "classification"
    optimizer = build_optimizer(spec.optimizer, net, spec.regularization)
    smoothing = spec.regularization.label_smoothing
    objective = nn.CrossEntropyLoss(label_smoothing=smoothing) if classification else nn.MSELoss()
    return TrainingRun(
        spec=spec,
        device=device,
        data=data,
        net=net,
        loss_fn=nn.CrossEntropyLoss() if classification else nn.MSELoss(),
        optimizer=optimizer,
        schedule=build_schedule(spec.schedule, spec.optimizer.lr, total_steps),
        clipper=build_clipper(spec.clipping),
        precision=build_precision(spec.precision, device),
        total_steps=total_steps,
        objective=objective,
        step=STEPS["sam" if spec.optimizer.sam else traits.kind],
        regularizer=build_regularizer(spec, net, optimizer),
        stats=StepStats(device),
        params=trainable(net),
    )
