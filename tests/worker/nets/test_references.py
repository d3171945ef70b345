"""Forward-pass equivalence: each net from the registry against an independent reference.

The references are written from the architecture each module's docstring documents, in
torch.nn.functional calls and explicit tensor arithmetic (the transformer also against
nn.TransformerEncoderLayer). Our parameters are randomized first (norm affines and running
statistics included, so a skipped or misplaced layer shows) and handed to the reference in the
order the docstring names the layers.
"""

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from models.catalog import NET_ARGS
from models.spec import JobSpec
from worker.engine.setup import build_run
from worker.engine.steps import forward_backward
from worker.nets import NETS

CPU = torch.device("cpu")
EPS = 1e-5  # torch's default eps for batch, layer and group norm
ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5)),
}


def build(name: str, args: dict, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    torch.manual_seed(0)
    net = NETS[name](NET_ARGS[name].model_validate(args), input_shape, outputs)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.5)
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net


def of_type(net: nn.Module, *kinds: type[nn.Module]) -> Iterator[nn.Module]:
    """The net's modules of these kinds, in registration order (the order the layers run in)."""
    return iter([m for m in net.modules() if isinstance(m, kinds)])


# --- norms written out -------------------------------------------------------------------------


def batch_norm(x: torch.Tensor, bn: nn.Module, training: bool) -> torch.Tensor:
    """Per channel (dim 1); batch statistics (biased variance) in training, running ones in eval."""
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    if training:
        mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    else:
        mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (x - mean) / torch.sqrt(var + EPS) * bn.weight.view(shape) + bn.bias.view(shape)


def layer_norm(x: torch.Tensor, ln: nn.Module, dims: tuple[int, ...] = (-1,)) -> torch.Tensor:
    """Per example over `dims` (biased variance); affine per feature (per channel for images)."""
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    shape = [1, -1, 1, 1] if x.dim() == 4 else [-1]
    return (x - mean) / torch.sqrt(var + EPS) * ln.weight.view(shape) + ln.bias.view(shape)


def norm(kind: str, x: torch.Tensor, norms: Iterator[nn.Module], training: bool) -> torch.Tensor:
    if kind == "batch":
        return batch_norm(x, next(norms), training)
    if kind == "layer":
        return layer_norm(x, next(norms), (1, 2, 3) if x.dim() == 4 else (-1,))
    return x


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


# --- mlp ---------------------------------------------------------------------------------------


def mlp_reference(net: nn.Module, args: dict, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Flatten → [Linear → norm → activation → dropout] per hidden width → Linear; the hidden
    linear layers have no bias under batch norm."""
    linears, norms = of_type(net, nn.Linear), of_type(net, *NORMS)
    kind = args.get("norm", "none")
    h = x.reshape(len(x), -1)
    for width in args["hidden"]:
        dense = next(linears)
        assert dense.weight.shape[0] == width
        assert (dense.bias is None) == (kind == "batch")
        h = h @ dense.weight.T + (0 if dense.bias is None else dense.bias)
        h = ACT[args.get("activation", "relu")](norm(kind, h, norms, training))
    head = next(linears)
    return h @ head.weight.T + head.bias


MLP_CASES = [
    {"hidden": [16, 12], "norm": "none", "activation": "tanh"},
    {"hidden": [16, 12], "norm": "batch", "dropout": 0.3},
    {"hidden": [16], "norm": "layer", "activation": "gelu", "dropout": 0.5},
]


@pytest.mark.parametrize("args", MLP_CASES, ids=lambda a: a["norm"])
def test_mlp_matches_reference_in_eval_mode(args: dict) -> None:
    net = build("mlp", args, (3, 2, 5), 4).eval()
    x = torch.randn(8, 3, 2, 5)
    with torch.no_grad():
        assert_close(net(x), mlp_reference(net, args, x, training=False))


def test_mlp_batch_norm_uses_batch_statistics_in_train_mode() -> None:
    args = {"hidden": [16, 12], "norm": "batch"}
    net = build("mlp", args, (10,), 3).train()
    x = torch.randn(32, 10)
    expected = mlp_reference(net, args, x, training=True)
    assert_close(net(x), expected)


# --- cnn ---------------------------------------------------------------------------------------


def cnn_reference(
    net: nn.Module, args: dict, x: torch.Tensor, training: bool = False
) -> torch.Tensor:
    """[conv ("same" padding) → norm → activation → 2×2 max-pool while the image is at least
    2×2]* → global average pool → dropout → linear; conv bias off under batch norm."""
    convs, norms = of_type(net, nn.Conv2d), of_type(net, *NORMS)
    kind = args["norm"]
    k = args.get("kernel_size", 3)
    h = x
    for filters in args["channels"]:
        conv = next(convs)
        assert conv.weight.shape == (filters, h.shape[1], k, k)
        assert (conv.bias is None) == (kind == "batch")
        h = F.conv2d(h, conv.weight, conv.bias, padding=k // 2)
        h = ACT[args.get("activation", "relu")](norm(kind, h, norms, training))
        if min(h.shape[2:]) >= 2:
            h = F.max_pool2d(h, 2)
    h = h.mean((2, 3))
    head = next(of_type(net, nn.Linear))
    return h @ head.weight.T + head.bias


CNN_CASES = [
    # 8×8 → 4 → 2 → 1, then a fourth block at 1×1 that must not pool
    {"channels": [4, 6, 5, 3], "norm": "batch", "dropout": 0.2},
    {"channels": [4, 5], "norm": "layer", "kernel_size": 5, "activation": "gelu"},
    {"channels": [3, 4], "norm": "none", "activation": "tanh"},
]


@pytest.mark.parametrize("args", CNN_CASES, ids=lambda a: a["norm"])
def test_cnn_matches_reference_in_eval_mode(args: dict) -> None:
    net = build("cnn", args, (2, 8, 9), 5).eval()
    x = torch.randn(6, 2, 8, 9)
    with torch.no_grad():
        assert_close(net(x), cnn_reference(net, args, x))


# --- seed_cnn ----------------------------------------------------------------------------------


def test_seed_cnn_matches_reference_in_eval_mode() -> None:
    """Conv2D(filters, k×k, valid, relu) → MaxPool 2×2 → Dropout → Flatten → Dense."""
    args = {"filters": 5, "kernel_size": 3, "dropout": 0.25}
    net = build("seed_cnn", args, (1, 9, 8), 10).eval()
    x = torch.randn(7, 1, 9, 8)
    conv, dense = next(of_type(net, nn.Conv2d)), next(of_type(net, nn.Linear))
    expected = F.max_pool2d(torch.relu(F.conv2d(x, conv.weight, conv.bias)), 2)
    assert expected.shape == (7, 5, 3, 3)  # (9-2)//2 × (8-2)//2
    expected = expected.reshape(7, -1) @ dense.weight.T + dense.bias
    with torch.no_grad():
        assert_close(net(x), expected)


# --- resnet ------------------------------------------------------------------------------------


def resnet_reference(
    net: nn.Module, args: dict, x: torch.Tensor, training: bool = False
) -> torch.Tensor:
    """He et al. 2016, CIFAR layout: 3×3 stem conv → norm → relu; stages of basic blocks
    relu(norm(conv3×3(relu(norm(conv3×3(x))))) + shortcut(x)), the shortcut identity or a strided
    1×1 conv → norm where the shape changes; stage s has width·2^s channels and its first block
    (s > 0) strides 2 while the image is at least 2×2; global average pool → linear. Convs have
    no bias."""
    convs, norms = of_type(net, nn.Conv2d), of_type(net, *NORMS)
    kind = args["norm"]

    def conv(h: torch.Tensor, size: int, stride: int = 1) -> torch.Tensor:
        c = next(convs)
        assert c.bias is None and c.weight.shape[-1] == size
        return F.conv2d(h, c.weight, stride=stride, padding=size // 2)

    h = torch.relu(norm(kind, conv(x, 3), norms, training))
    for stage, blocks in enumerate(args["blocks"]):
        width = args["width"] * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 and min(h.shape[2:]) >= 2 else 1
            out = torch.relu(norm(kind, conv(h, 3, stride), norms, training))
            out = norm(kind, conv(out, 3), norms, training)
            if stride != 1 or h.shape[1] != width:
                h = norm(kind, conv(h, 1, stride), norms, training)
            h = torch.relu(out + h)
            assert h.shape[1] == width
    head = next(of_type(net, nn.Linear))
    return h.mean((2, 3)) @ head.weight.T + head.bias


RESNET_CASES = [
    {"width": 4, "blocks": [2, 1, 1], "norm": "batch"},  # 7×7 → 4×4 → 2×2
    {"width": 3, "blocks": [1, 2], "norm": "layer"},
    {"width": 4, "blocks": [1, 1, 1, 1], "norm": "none"},  # the last stage runs at 1×1
]


@pytest.mark.parametrize("args", RESNET_CASES, ids=lambda a: a["norm"])
def test_resnet_matches_reference_in_eval_mode(args: dict) -> None:
    net = build("resnet", args, (3, 7, 7), 6).eval()
    x = torch.randn(5, 3, 7, 7)
    with torch.no_grad():
        assert_close(net(x), resnet_reference(net, args, x))


def test_resnet_batch_norm_uses_batch_statistics_in_train_mode() -> None:
    args = {"width": 4, "blocks": [1, 1], "norm": "batch"}
    net = build("resnet", args, (2, 6, 6), 3).train()
    x = torch.randn(8, 2, 6, 6)
    expected = resnet_reference(net, args, x, training=True)
    assert_close(net(x), expected)


# --- transformer -------------------------------------------------------------------------------

TRANSFORMER_CASES = [
    {"d_model": 16, "heads": 4, "layers": 2, "ff_mult": 2, "norm": "layer"},
    {"d_model": 12, "heads": 3, "layers": 2, "ff_mult": 3, "norm": "none"},
]


def transformer_reference(net: nn.Module, args: dict, x: torch.Tensor) -> torch.Tensor:
    """Written from the formulas: token projection + learned positions; per block, pre-norm
    x + MHA(LN(x)) (softmax(QKᵀ/√d_head)V per head, no mask) and x + W₂·GELU(W₁·LN(x));
    a final LN; the head on the last position."""
    state = dict(net.named_parameters())
    d, heads = args["d_model"], args["heads"]
    batch, length, _ = x.shape

    def ln(h: torch.Tensor, prefix: str) -> torch.Tensor:
        if args["norm"] == "none":
            return h
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + EPS) * state[f"{prefix}.weight"] + state[
            f"{prefix}.bias"
        ]

    h = x @ state["embed.weight"].T + state["embed.bias"] + state["position"][:, :length]
    for i in range(args["layers"]):
        p = f"blocks.{i}"
        a = ln(h, f"{p}.norm1")
        w_q, w_k, w_v = state[f"{p}.attention.in_proj_weight"].chunk(3)
        b_q, b_k, b_v = state[f"{p}.attention.in_proj_bias"].chunk(3)

        def split(t: torch.Tensor) -> torch.Tensor:  # (batch, heads, length, d_head)
            return t.reshape(batch, length, heads, d // heads).transpose(1, 2)

        q, k, v = split(a @ w_q.T + b_q), split(a @ w_k.T + b_k), split(a @ w_v.T + b_v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, d)
        out_w, out_b = (
            state[f"{p}.attention.out_proj.weight"],
            state[f"{p}.attention.out_proj.bias"],
        )
        h = h + attended @ out_w.T + out_b
        f = ln(h, f"{p}.norm2") @ state[f"{p}.feed_forward.0.weight"].T
        f = ACT["gelu"](f + state[f"{p}.feed_forward.0.bias"])
        h = h + f @ state[f"{p}.feed_forward.2.weight"].T + state[f"{p}.feed_forward.2.bias"]
    last = ln(h[:, -1], "norm")
    return last @ state["head.weight"].T + state["head.bias"]


@pytest.mark.parametrize("args", TRANSFORMER_CASES, ids=lambda a: a["norm"])
def test_transformer_matches_explicit_formulas(args: dict) -> None:
    # float64: without norms the activations grow to ~1e2, past fp32's default tolerance
    net = build("transformer", args, (7, 5), 3).double().eval()
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    with torch.no_grad():
        assert_close(net(x), transformer_reference(net, args, x))


def test_transformer_matches_torch_encoder_layers() -> None:
    """With layer norm our block is nn.TransformerEncoderLayer(norm_first=True,
    activation="gelu", batch_first=True, dropout 0), no mask, same names for attention and norms.
    (`norm: none` cannot be put through torch's layer: its forward reads norm1.eps even off the
    fast path; the explicit-formula test covers it.) Grad mode stays on so torch takes its plain
    path rather than the fused fast path."""
    args = TRANSFORMER_CASES[0]
    net = build("transformer", args, (6, 5), 3).eval()
    d = args["d_model"]
    layers = []
    for i in range(len(net.blocks)):
        layer = nn.TransformerEncoderLayer(
            d,
            args["heads"],
            args["ff_mult"] * d,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        prefix = f"blocks.{i}."
        renamed = {
            k.removeprefix(prefix)
            .replace("attention.", "self_attn.")
            .replace("feed_forward.0.", "linear1.")
            .replace("feed_forward.2.", "linear2."): v
            for k, v in net.state_dict().items()
            if k.startswith(prefix)
        }
        layer.load_state_dict(renamed, strict=True)
        layers.append(layer.eval())
    final = nn.LayerNorm(d)
    final.load_state_dict({"weight": net.norm.weight, "bias": net.norm.bias})

    x = torch.randn(4, 6, 5)
    h = F.linear(x, net.embed.weight, net.embed.bias) + net.position
    for layer in layers:
        h = layer(h)
    expected = F.linear(final(h[:, -1]), net.head.weight, net.head.bias)
    assert_close(net(x), expected)


# --- bf16 autocast -----------------------------------------------------------------------------


def test_bf16_autocast_forward_is_close_to_fp32_and_keeps_fp32_weights(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"name": "mlp", "args": {"hidden": [64, 64], "norm": "layer"}},
            "data": {"name": "digits", "batch_size": 128},
            "optimizer": {"name": "sgd", "lr": 0.01},
            "precision": "bf16",
            "max_steps": 1,
        }
    )
    run = build_run(spec, data_root=tmp_path, device=CPU)
    x, y = next(run.data.epoch_batches())
    seen: list[torch.dtype] = []
    first = next(of_type(run.net, nn.Linear))
    hook = first.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        loss_bf16 = forward_backward(run, x, y)  # the engine's training forward, under autocast
        with torch.no_grad():
            loss_fp32 = run.objective(run.net(x), y)  # plain fp32 at the same weights
    finally:
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32]  # autocast ran the matmul in bf16, then not
    assert loss_bf16.dtype == torch.float32  # cross-entropy autocasts to fp32
    assert_close(loss_bf16, loss_fp32, rtol=1e-2, atol=0)
    assert loss_bf16 != loss_fp32  # the two forwards really differ in precision
    for parameter in run.net.parameters():  # the model is not cast: fp32 weights and grads
        assert parameter.dtype == torch.float32
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32


# --- dropout in training mode ------------------------------------------------------------------

DROPOUT_CASES = [
    ("mlp", {"hidden": [256], "activation": "tanh", "dropout": 0.3}, (20,)),
    ("cnn", {"channels": [64], "norm": "none", "activation": "tanh", "dropout": 0.5}, (1, 4, 4)),
    ("seed_cnn", {"filters": 32, "dropout": 0.25}, (1, 6, 6)),
    ("transformer", {"d_model": 32, "heads": 2, "layers": 1, "dropout": 0.2}, (8, 3)),
]


@pytest.mark.parametrize(("name", "args", "shape"), DROPOUT_CASES, ids=lambda v: str(v)[:12])
def test_dropout_in_train_mode_zeroes_p_and_rescales_the_rest(
    name: str, args: dict, shape: tuple[int, ...]
) -> None:
    p = args["dropout"]
    net = build(name, args, shape, 3).train()
    dropouts = [m for m in net.modules() if type(m) is nn.Dropout]
    assert dropouts and all(m.p == p for m in dropouts)
    dropout = dropouts[-1]
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        captured["in"], captured["out"] = inputs[0].detach(), output.detach()

    dropout.register_forward_hook(keep)
    torch.manual_seed(1)
    net(torch.randn(128, *shape))
    live = captured["in"] != 0  # relu zeros are not dropout's doing
    x, out = captured["in"][live], captured["out"][live]
    n = x.numel()
    assert n > 4000
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n), (dropped, p, n)
    kept = out != 0
    assert_close(out[kept], x[kept] / (1 - p))
