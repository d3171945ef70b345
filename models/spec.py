"""JobSpec v1: one training run, validated without torch.

Every component is `{"name": …, <its common fields>, "args": {<its own options>}}`. The name
selects a catalog entry (models/catalog); a wrong name is answered with the list of valid names,
and a wrong option with its field path.
"""

import hashlib
import json
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.catalog import DATASET_ARGS, NET_ARGS, OPTIMIZER_ARGS, SCHEDULE_ARGS
from models.catalog.base import Args
from models.catalog.datasets import REGRESSION_DATA
from models.catalog.solvers import (
    METHOD_ARGS,
    METHOD_KINDS,
    PROBLEM_ARGS,
    PROBLEM_KINDS,
    methods_for,
)
from models.catalog.training import (
    ClippingSpec,
    InitScheme,
    LRRangeTestSpec,
    RegularizationSpec,
    SAMSpec,
    combination_errors,
)

MAX_STEPS = 10_000_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetCommon(Strict):
    """`model`: the network. Its input and output sizes come from the data."""


class DataCommon(Strict):
    batch_size: int = Field(64, ge=1, le=65_536)
    val_fraction: float = Field(0.2, ge=0.0, le=0.9, description="held out for evaluation")
    pca: int | None = Field(
        None, ge=1, le=4096, description="project inputs on k principal components (train split)"
    )
    split_seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="seed of the data (synthetic sets) and of its validation split; default the "
        "job's seed. Fix it so that jobs over several seeds see the same data (ensembles)",
    )


class OptimizerCommon(Strict):
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    sam: SAMSpec | None = Field(None, description="SAM/ASAM around this optimizer")


class ScheduleCommon(Strict):
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="linear warmup from 0")


class ProblemCommon(Strict):
    """`solve.problem`: what to solve (models/catalog/solvers.py lists the problems)."""


class MethodCommon(Strict):
    label: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,39}$",
        description="metric prefix (`<label>/coef_error`); default the method's name",
    )


def _component(kind: str, common: type[Strict], catalog: dict[str, type[Args]]) -> Any:
    """A tagged union with one variant per catalog entry, discriminated by `name`."""
    variants = []
    for name, args_model in catalog.items():
        title = "".join(part.title() for part in f"{kind}_{name}".split("_"))
        variants.append(
            create_model(  # type: ignore[call-overload]
                title,
                __base__=common,
                name=(Literal[name], ...),
                args=(args_model, Field(default_factory=args_model)),
            )
        )
    return Annotated[Union[tuple(variants)], Field(discriminator="name")]  # noqa: UP007


NetSpec = _component("model", NetCommon, NET_ARGS)
DataSpec = _component("data", DataCommon, DATASET_ARGS)
OptimizerSpec = _component("optimizer", OptimizerCommon, OPTIMIZER_ARGS)
ScheduleSpec = _component("schedule", ScheduleCommon, SCHEDULE_ARGS)
ProblemSpec = _component("problem", ProblemCommon, PROBLEM_ARGS)
MethodSpec = _component("method", MethodCommon, METHOD_ARGS)
COMPONENTS = {
    "model": NET_ARGS,
    "data": DATASET_ARGS,
    "optimizer": OPTIMIZER_ARGS,
    "schedule": SCHEDULE_ARGS,
    "problem": PROBLEM_ARGS,
    "methods": METHOD_ARGS,
}


def field_error(loc: tuple[int | str, ...], message: str, value: Any = None) -> ValidationError:
    """A validation error at a field path, from a validator that sees the whole model."""
    error = PydanticCustomError("invalid_combination", message)
    return ValidationError.from_exception_data(
        "JobSpec", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class SolveSpec(Strict):
    """`task: solve`: direct and iterative methods on one problem, metrics per method."""

    problem: ProblemSpec  # type: ignore[valid-type]
    methods: list[MethodSpec] = Field(  # type: ignore[valid-type]
        default_factory=list,
        max_length=32,
        description="names or {name, label, args}; default every method for the problem's kind",
    )
    ridge: float = Field(
        0.0, ge=0.0, le=1e6, description="λ: every method solves min ‖Xw − y‖² + λ‖w‖²"
    )
    record_every: int = Field(
        1, ge=1, le=1_000_000, description="log every k-th iterate of iterative methods"
    )

    @model_validator(mode="before")
    @classmethod
    def _method_names_and_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        problem = data.get("problem")
        name = problem.get("name") if isinstance(problem, dict) else None
        if "methods" not in data and name in PROBLEM_KINDS:
            ridge = data.get("ridge", 0.0)
            ridge = ridge if isinstance(ridge, int | float) else 0.0
            data["methods"] = methods_for(PROBLEM_KINDS[name], ridge=ridge)
        if isinstance(data.get("methods"), list):
            data["methods"] = [{"name": m} if isinstance(m, str) else m for m in data["methods"]]
        return data

    @model_validator(mode="after")
    def _methods_fit_problem(self) -> "SolveSpec":
        kind = PROBLEM_KINDS[self.problem.name]
        if not self.methods:
            raise field_error(("methods",), "list at least one method, or leave it out for all")
        labels: set[str] = set()
        for i, method in enumerate(self.methods):
            if kind not in METHOD_KINDS[method.name]:
                valid = ", ".join(repr(m) for m in methods_for(kind, ridge=1.0))
                raise field_error(
                    ("methods", i, "name"),
                    f"{method.name!r} does not solve {kind} problems like "
                    f"{self.problem.name!r}; valid choices: {valid}",
                    method.name,
                )
            label = method.label or method.name
            if label in labels:
                raise field_error(
                    ("methods", i, "label"),
                    f"metric prefix {label!r} is used twice; give one of them a distinct label",
                    label,
                )
            labels.add(label)
            if method.name == "ridge" and method.args.lam is None and self.ridge == 0:
                raise field_error(
                    ("methods", i, "args", "lam"),
                    "ridge needs λ > 0: set this or solve.ridge",
                )
        if self.ridge and kind != "least_squares":
            raise field_error(("ridge",), f"ridge applies to least-squares problems, not {kind}")
        return self


class EnsembleSpec(Strict):
    """`task: ensemble`: evaluate finished training jobs that differ only by seed as one deep
    ensemble (their averaged predictive distribution) on their shared validation split."""

    jobs: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        min_length=2, max_length=32, description="ids of succeeded jobs with saved weights"
    )

    @model_validator(mode="after")
    def _distinct(self) -> "EnsembleSpec":
        if len(set(self.jobs)) != len(self.jobs):
            raise field_error(("jobs",), "a job appears twice")
        return self


class CompressSpec(Strict):
    """Low-rank SVD compression of the trained net's linear layers, evaluated per rank."""

    ranks: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(min_length=1, max_length=32)


class EvalSpec(Strict):
    every_epochs: int = Field(1, ge=1, le=10_000)
    every_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="overrides epochs")
    mc_dropout: int | None = Field(
        None, ge=2, le=1000, description="Monte Carlo dropout: stochastic passes per evaluation"
    )


class TargetSpec(Strict):
    metric: str = Field("val_acc", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    value: float = Field(..., ge=-1e12, le=1e12)
    mode: Literal["max", "min"] = "max"
    stop_training: bool = Field(False, description="end the job when the target is reached")


class StopSpec(Strict):
    target: TargetSpec | None = None
    divergence: bool = Field(True, description="end the job `diverged` on a non-finite loss")
    max_skipped_steps: int = Field(
        32,
        ge=1,
        le=1_000_000,
        description="fp16: end the job `diverged` after this many consecutive steps skipped for "
        "non-finite gradients (the loss scale has then been halved as many times)",
    )


Tags = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=64)],
        Annotated[str, Field(max_length=256)],
    ],
    Field(max_length=32),
]


class JobSpec(Strict):
    version: Literal[1] = 1
    name: str | None = Field(None, max_length=200)
    tags: Tags = Field(default_factory=dict)
    task: Literal["train", "solve", "lr_range_test", "ensemble"] = "train"
    model: NetSpec | None = None  # type: ignore[valid-type]
    data: DataSpec | None = None  # type: ignore[valid-type]
    optimizer: OptimizerSpec | None = None  # type: ignore[valid-type]
    solve: SolveSpec | None = None
    ensemble: EnsembleSpec | None = None
    compress: CompressSpec | None = None
    schedule: ScheduleSpec = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"name": "constant"}, validate_default=True
    )
    clipping: ClippingSpec = Field(default_factory=ClippingSpec)
    regularization: RegularizationSpec = Field(default_factory=RegularizationSpec)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    init: InitScheme = "default"  # type: ignore[valid-type]
    lr_range_test: LRRangeTestSpec | None = Field(None, description="task lr_range_test")
    epochs: int = Field(1, ge=1, le=100_000)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="overrides epochs")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    stop: StopSpec = Field(default_factory=StopSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="steps between checkpoints; a job whose worker is lost resumes from the last "
        "one. Default: the worker's DESCENT_CHECKPOINT_EVERY. Not in the spec hash (it does "
        "not change the run)",
    )

    @model_validator(mode="after")
    def _sections_fit_task(self) -> "JobSpec":
        """A training task needs model, data and optimizer; `task: solve` needs `solve` (and
        `task: ensemble` its `ensemble`) and takes nothing that only training reads."""
        if self.task in UNTRAINED_FIELDS:
            if getattr(self, self.task) is None:
                raise ValidationError.from_exception_data(
                    "JobSpec", [InitErrorDetails(type="missing", loc=(self.task,), input=None)]
                )
            unused = sorted(self.model_fields_set - UNTRAINED_FIELDS[self.task])
            if unused:
                raise field_error(
                    (unused[0],), f"not used by task {self.task!r}", getattr(self, unused[0])
                )
            return self
        missing = [n for n in ("model", "data", "optimizer") if getattr(self, n) is None]
        if missing:
            raise ValidationError.from_exception_data(
                "JobSpec", [InitErrorDetails(type="missing", loc=(n,), input=None) for n in missing]
            )
        for section in UNTRAINED_FIELDS:
            if getattr(self, section) is not None:
                raise field_error((section,), f"only read by task {section!r}, not {self.task!r}")
        if self.compress is not None and self.data.val_fraction == 0:  # type: ignore[union-attr]
            raise field_error(("compress",), "needs validation data: set data.val_fraction > 0")
        if self.eval.mc_dropout is not None:
            if self.data.name in REGRESSION_DATA:  # type: ignore[union-attr]
                raise field_error(("eval", "mc_dropout"), "needs a classification data set")
            if not getattr(self.model.args, "dropout", 0):  # type: ignore[union-attr]
                raise field_error(("eval", "mc_dropout"), "needs a model with args.dropout > 0")
        return self

    @model_serializer(mode="wrap")
    def _only_what_runs(self, handler: Any) -> dict[str, Any]:
        """Dumps (the stored resolved spec, the hash) leave out sections the task does not read."""
        dumped = handler(self)
        if self.task in UNTRAINED_FIELDS:
            return {k: v for k, v in dumped.items() if k in UNTRAINED_FIELDS[self.task]}
        optional = ("solve", "ensemble", "compress", "lr_range_test")
        return {k: v for k, v in dumped.items() if not (k in optional and v is None)}

    @model_validator(mode="after")
    def _loss_fits_data(self) -> "JobSpec":
        if (
            self.stop.target
            and self.stop.target.metric == "val_acc"
            and self.data is not None
            and self.data.name in REGRESSION_DATA
        ):
            raise ValueError("stop.target.metric val_acc needs a classification data set")
        return self

    @model_validator(mode="after")
    def _strategies_combine(self) -> "JobSpec":
        """Optimizer, schedule, clipping, regularization and precision that cannot run together
        are refused here, at submit time (models/catalog/training.py has the rules)."""
        if self.task in UNTRAINED_FIELDS or None in (self.model, self.data, self.optimizer):
            return self
        if self.task == "lr_range_test" and self.lr_range_test is None:
            self.lr_range_test = LRRangeTestSpec()
        problems = combination_errors(self)
        if problems:
            raise ValidationError.from_exception_data(
                "JobSpec",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("invalid_combination", message),
                        loc=loc,
                        input=None,
                    )
                    for loc, message in problems
                ],
            )
        return self

    def canonical_json(self) -> str:
        """Defaults filled in, keys sorted, labels (name, tags) left out: one run, one string."""
        run = self.model_dump(mode="json", exclude={"name", "tags", "checkpoint_every"})
        return json.dumps(run, sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def queue(self) -> str:
        """The queue suffix a job goes to: GPU jobs only reach workers that have a GPU."""
        return {"cuda": "gpu", "cpu": "cpu"}.get(self.device, "any")


SOLVE_FIELDS = frozenset({"version", "name", "tags", "task", "solve", "seed", "device"})
# Tasks that train nothing, and the only fields each reads: the rest must be left out.
UNTRAINED_FIELDS = {
    "solve": SOLVE_FIELDS,
    "ensemble": frozenset({"version", "name", "tags", "task", "ensemble", "device"}),
}


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("body", "optimizer", "adam", "args", "eps")` → `optimizer.args.eps`.

    Pydantic puts the union tag (the component's name) in the location; a user thinks of the
    path in their JSON, which has no such level.
    """
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out: list[str] = []
    for i, part in enumerate(parts):
        # the tag follows its component's key, or its index in a list of components
        owner = parts[i - 2] if i > 1 and isinstance(parts[i - 1], int) else parts[i - 1]
        if i > 0 and owner in COMPONENTS and part in COMPONENTS[str(owner)]:
            continue
        out.append(str(part))
    return ".".join(out)


def describe_errors(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic errors as `{field, message, type}`; a bad component name lists valid ones."""
    described = []
    for error in errors:
        path = field_path(tuple(error["loc"]))
        message = error["msg"]
        key = next((p for p in reversed(path.split(".")) if not p.isdigit()), "")
        if error["type"] in ("union_tag_not_found", "union_tag_invalid") and key in COMPONENTS:
            choices = ", ".join(repr(name) for name in COMPONENTS[key])
            given = error.get("ctx", {}).get("tag")
            problem = f"unknown name {given!r}" if given is not None else "field required"
            path, message = f"{path}.name", f"{problem}; valid choices: {choices}"
        described.append({"field": path, "message": message, "type": error["type"]})
    return described
