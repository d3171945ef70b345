"""Small synthetic problems for the optimizer catalog: inline points, and two sequence tasks
where long-range memory (recurrent nets, clipping, orthogonal weights) or attention (warmup)
make a visible difference. Each is fully determined by (args, seed).

- points: the rows given in the spec (002's (1,3), (2,5) example), regression.
- adding_problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): inputs (length, 2),
  a uniform value channel and a marker channel with two ones, one in each half; the target is
  the sum of the two marked values. Predicting the mean (1.0) scores MSE 1/6 ≈ 0.167, so a net
  below that has bridged the distance between the markers.
- associative_recall (Ba et al. 2016; the "induction head" task): `pairs` key–value pairs, then
  a query key; the label is the value stored with that key. Tokens are one-hot over
  n_keys + n_values symbols, inputs (2·pairs + 1, n_keys + n_values); chance is 1/n_values.
"""

from pathlib import Path

import torch

from models.catalog.datasets import AddingProblemArgs, AssociativeRecallArgs, PointsArgs
from worker.datasets.base import RawData


def load_points(args: PointsArgs, *, seed: int, data_root: Path) -> RawData:
    x = torch.tensor(args.x, dtype=torch.float32)
    y = torch.tensor(args.y, dtype=torch.float32)
    return RawData(x, y, "regression", y.shape[1], f"{len(x)} points given in the spec")


def load_adding_problem(args: AddingProblemArgs, *, seed: int, data_root: Path) -> RawData:
    generator = torch.Generator().manual_seed(seed)
    n, length = args.n_samples, args.length
    values = torch.rand(n, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, length, (n,), generator=generator)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=2)
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)
    source = f"adding problem ({n} sequences of length {length}, seed {seed})"
    return RawData(x, y, "regression", 1, source)


def load_associative_recall(args: AssociativeRecallArgs, *, seed: int, data_root: Path) -> RawData:
    generator = torch.Generator().manual_seed(seed)
    n, pairs = args.n_samples, args.pairs
    keys = torch.rand(n, args.n_keys, generator=generator).argsort(dim=1)[:, :pairs]
    values = torch.randint(0, args.n_values, (n, pairs), generator=generator)
    asked = torch.randint(0, pairs, (n,), generator=generator)
    rows = torch.arange(n)
    tokens = torch.empty(n, 2 * pairs + 1, dtype=torch.long)
    tokens[:, 0:-1:2] = keys
    tokens[:, 1:-1:2] = args.n_keys + values  # values after the keys in the vocabulary
    tokens[:, -1] = keys[rows, asked]
    x = torch.nn.functional.one_hot(tokens, args.n_keys + args.n_values).float()
    source = (
        f"associative recall ({n} sequences, {pairs} pairs, {args.n_keys} keys, "
        f"{args.n_values} values, seed {seed})"
    )
    return RawData(x, values[rows, asked], "classification", args.n_values, source)
