"""How big a job is, estimated from its spec without torch: parameters of the net, examples and
shapes of the data, and the number of optimizer steps.

The API refuses a job over a key's limits at submit time (api/limits.py), so it needs a net's
parameter count before any worker builds it. Each net in NET_ARGS has an estimator here, keyed
by the same name, that counts exactly what the torch module in worker/nets/ will hold
(tests/worker/test_sizes.py compares them with `numel()` of the built nets); each data set in
DATASET_ARGS has its size and shapes here. A name without an entry (a net added in a hurry) gets a
deliberately high guess, so that missing an estimator errs towards refusing a job, never towards
letting a huge one through; tests/models/test_sizes.py fails until the entry exists.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from models.catalog.base import Args
from models.catalog.solvers import problem_shape


@dataclass(frozen=True)
class DataShape:
    examples: int  # an upper bound: the data set may deliver fewer (a failed download falls back)
    input_shape: tuple[int, ...]
    num_outputs: int  # classes, or regression targets


DataShapeFn = Callable[[Any], DataShape]
NetSizeFn = Callable[[Any, tuple[int, ...], int], int]


def _mnist(args: Any) -> DataShape:
    # 70,000 when IDX files hold both splits; `subset` takes the first N.
    return DataShape(args.subset or 70_000, (1, 28, 28), 10)


def _associative_recall(args: Any) -> DataShape:
    # one-hot tokens: keys, then values, in one vocabulary; pairs of (key, value) and a query
    return DataShape(
        args.n_samples, (2 * args.pairs + 1, args.n_keys + args.n_values), args.n_values
    )


DATA_SHAPES: dict[str, DataShapeFn] = {
    "synthetic_regression": lambda a: DataShape(a.n_samples, (a.n_features,), a.n_targets),
    "synthetic_classification": lambda a: DataShape(a.n_samples, (a.n_features,), a.n_classes),
    "digits": lambda a: DataShape(1797, (1, 8, 8), 10),
    "mnist": _mnist,
    "points": lambda a: DataShape(len(a.x), (len(a.x[0]),), len(a.y[0])),
    "adding_problem": lambda a: DataShape(a.n_samples, (a.length, 2), 1),
    "associative_recall": _associative_recall,
}
# ImageNet-sized: larger than any data set the catalog holds today.
FALLBACK_DATA = DataShape(1_281_167, (3, 224, 224), 1000)


def dense(inputs: int, outputs: int) -> int:
    """nn.Linear(inputs, outputs): weight and bias."""
    return inputs * outputs + outputs


def conv2d(channels: int, filters: int, kernel: int) -> int:
    """nn.Conv2d(channels, filters, kernel): weight and bias."""
    return channels * filters * kernel * kernel + filters


def linear_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    return dense(math.prod(input_shape), num_outputs)


def norm(kind: str, features: int) -> int:
    """worker/nets/constraints.norm_layer: batch and layer (GroupNorm for images) norms hold a
    scale and a shift per feature. Weight constraints (orthogonal, spectral) add no parameters:
    the parametrized weight keeps its shape."""
    return 2 * features if kind in ("batch", "layer") else 0


def mlp_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    total, width = 0, math.prod(input_shape)
    norm_kind = getattr(args, "norm", "none")
    for hidden in args.hidden:
        bias = 0 if norm_kind == "batch" else hidden  # a batch norm's shift replaces the bias
        total += width * hidden + bias + norm(norm_kind, hidden)
        width = hidden
    return total + dense(width, num_outputs)


def seed_cnn_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    if len(input_shape) != 3:  # the worker refuses to build it; the convolution alone
        return conv2d(1, args.filters, args.kernel_size)
    channels, height, width = input_shape
    k = args.kernel_size
    pooled = max(height - k + 1, 0) // 2 * (max(width - k + 1, 0) // 2)
    return conv2d(channels, args.filters, k) + dense(args.filters * pooled, num_outputs)


def cnn_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    channels, total = (input_shape[0] if input_shape else 1), 0
    for filters in args.channels:
        bias = 0 if args.norm == "batch" else filters
        total += channels * filters * args.kernel_size**2 + bias + norm(args.norm, filters)
        channels = filters
    return total + dense(channels, num_outputs)


def resnet_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    """worker/nets/resnet.py: bias-free 3×3 convolutions, a 1×1 shortcut where the shape
    changes, the same stride rule (only while the image is at least 2 pixels wide)."""
    channels = input_shape[0] if input_shape else 1
    size = min(input_shape[1:]) if len(input_shape) == 3 else 1
    total = channels * args.width * 9 + norm(args.norm, args.width)
    inputs = args.width
    for stage, blocks in enumerate(args.blocks):
        outputs = args.width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 and size >= 2 else 1
            size = (size + 1) // 2 if stride == 2 else size
            total += inputs * outputs * 9 + outputs * outputs * 9 + 2 * norm(args.norm, outputs)
            if stride != 1 or inputs != outputs:
                total += inputs * outputs + norm(args.norm, outputs)
            inputs = outputs
    return total + dense(inputs, num_outputs)


RNN_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def rnn_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    features, hidden, total = input_shape[-1] if input_shape else 1, args.hidden, 0
    for layer in range(args.layers):
        inputs = features if layer == 0 else hidden
        if args.orthogonal != "none":  # our own loop: input Linear, bias-free recurrent matrix
            total += dense(inputs, hidden) + hidden * hidden
        else:  # torch's fused modules: weight_ih, weight_hh, bias_ih, bias_hh per gate
            gates = RNN_GATES[args.cell] * hidden
            total += gates * (inputs + hidden) + 2 * gates
    return total + dense(hidden, num_outputs)


def transformer_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    # a sequence (length, features); the worker refuses any other shape
    length, features = input_shape if len(input_shape) == 2 else (1, math.prod(input_shape))
    d, inner = args.d_model, args.ff_mult * args.d_model
    layer_norm = 2 * d if args.norm == "layer" else 0
    attention = 4 * d * d + 4 * d  # in-projection (q, k, v) and out-projection, with biases
    block = 2 * layer_norm + attention + dense(d, inner) + dense(inner, d)
    return (
        dense(features, d) + length * d + args.layers * block + layer_norm + dense(d, num_outputs)
    )


NET_SIZES: dict[str, NetSizeFn] = {
    "linear": linear_size,
    "mlp": mlp_size,
    "seed_cnn": seed_cnn_size,
    "cnn": cnn_size,
    "resnet": resnet_size,
    "rnn": rnn_size,
    "transformer": transformer_size,
}
FALLBACK_FLOOR = 10_000_000


def _integers(value: Any) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, Args):
        for item in value.model_dump().values():
            yield from _integers(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _integers(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _integers(item)


def fallback_size(args: Any, input_shape: tuple[int, ...], num_outputs: int) -> int:
    """A high guess for a net without an estimator: its largest integer option W taken as a width,
    16·W² parameters for every integer option (a transformer block holds 12·W²), input and output
    layers of width W, and never less than FALLBACK_FLOOR."""
    ints = [i for i in _integers(args) if i > 0]
    width = max(ints, default=1)
    guess = 16 * width * width * max(len(ints), 1) + (math.prod(input_shape) + num_outputs) * width
    return max(guess, FALLBACK_FLOOR)


@dataclass(frozen=True)
class JobSize:
    parameters: int
    steps: int
    data: DataShape
    estimated_by: str  # "net:<name>" or "fallback"

    @property
    def work(self) -> int:
        """Steps × parameters: what a key's `max_job_size` bounds."""
        return self.steps * self.parameters


def data_shape(data: Any) -> DataShape:
    shape_of = DATA_SHAPES.get(data.name)
    try:
        shape = shape_of(data.args) if shape_of else FALLBACK_DATA
    except (AttributeError, TypeError, ValueError, IndexError):  # args changed under it
        shape = FALLBACK_DATA
    components = getattr(data, "pca", None)
    if components:  # inputs projected on k principal components
        inputs = (min(components, math.prod(shape.input_shape)),)
        shape = DataShape(shape.examples, inputs, shape.num_outputs)
    return shape


def net_size(model: Any, shape: DataShape) -> tuple[int, str]:
    size_of = NET_SIZES.get(model.name)
    if size_of is not None:
        try:
            return size_of(model.args, shape.input_shape, shape.num_outputs), f"net:{model.name}"
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            pass
    return fallback_size(model.args, shape.input_shape, shape.num_outputs), "fallback"


def estimate_job(spec: Any) -> JobSize:
    """Parameters and optimizer steps of a models.spec.JobSpec, as the engine will count them
    (worker/engine/setup.py: max_steps, else epochs × ceil(train examples / batch size))."""
    if spec.task == "solve":  # no net: unknowns of the problem, one step per method
        rows, cols = problem_shape(spec.solve.problem)
        return JobSize(cols, len(spec.solve.methods), DataShape(rows, (cols,), 1), "solve")
    if spec.task == "ensemble":  # evaluates nets that were trained under these limits already
        return JobSize(0, len(spec.ensemble.jobs), DataShape(0, (), 0), "ensemble")
    shape = data_shape(spec.data)
    parameters, estimated_by = net_size(spec.model, shape)
    if spec.max_steps:
        steps = spec.max_steps
    else:
        n = max(shape.examples, 1)
        n_train = n - min(round(n * spec.data.val_fraction), n - 1)
        steps = spec.epochs * math.ceil(n_train / min(spec.data.batch_size, n_train))
    return JobSize(parameters=parameters, steps=steps, data=shape, estimated_by=estimated_by)
