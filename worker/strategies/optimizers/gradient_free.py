"""Gradient-free search over a small net's weights: simulated annealing and evolution strategies.

Both only evaluate the loss (the closure runs a forward pass under no_grad) and take the whole
training set as the batch. Acceptance and ranking are tensor operations on the device, so a step
needs no host sync. We wrote these ourselves: neither torch.optim nor pytorch-optimizer has them
as optimizers over a module's parameters (nevergrad and cma work on flat numpy vectors, which
would copy the weights to the host every evaluation).

Simulated annealing (Kirkpatrick et al. 1983; 002's rule):
    w' = w + lr · N(0, I)
    accept if L(w') < L(w), else with probability exp(−(L(w') − L(w)) / T_t)
    T_t = T₀ · cooling^t

Evolution strategies (Salimans et al. 2017, https://arxiv.org/abs/1703.03864):
    ε_i ~ N(0, I), i = 1..n (antithetic: ε_{n/2+i} = −ε_i)
    ĝ = 1/(n σ) Σ_i f_i ε_i,  f_i = L(w + σ ε_i) (or its centred rank in [−½, ½])
    w ← w − lr · ĝ
"""

from collections.abc import Callable

import torch

LossClosure = Callable[[], torch.Tensor]


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


class SimulatedAnnealing(torch.optim.Optimizer):
    def __init__(
        self, params, lr: float = 0.01, initial_temperature: float = 1.0, cooling: float = 0.995
    ):  # type: ignore[no-untyped-def]
        if lr <= 0 or initial_temperature <= 0 or not 0 < cooling <= 1:
            raise ValueError(
                f"simulated annealing needs lr > 0, initial_temperature > 0 and cooling in "
                f"(0, 1]; got {lr}, {initial_temperature}, {cooling}"
            )
        defaults = {"lr": lr, "initial_temperature": initial_temperature, "cooling": cooling}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: LossClosure) -> torch.Tensor:  # type: ignore[override]
        """One proposal; returns the loss at the weights kept."""
        params = _params(self)
        group = self.param_groups[0]
        state = self.state[params[0]]
        current = state.get("loss")
        if current is None:
            current = closure().detach().float()
        step = int(state.get("step", 0))
        temperature = group["initial_temperature"] * group["cooling"] ** step
        moves = [torch.randn_like(p) * g["lr"] for g in self.param_groups for p in g["params"]]
        torch._foreach_add_(params, moves)
        candidate = closure().detach().float()
        uniform = torch.rand((), device=candidate.device)
        accept = (candidate <= current) | (uniform < torch.exp((current - candidate) / temperature))
        # undo rejected moves without a branch on the host
        torch._foreach_mul_(moves, (~accept).to(params[0].dtype))
        torch._foreach_sub_(params, moves)
        state["loss"] = torch.where(accept, candidate, current)
        state["step"] = step + 1
        state["accepted"] = state.get("accepted", torch.zeros((), device=candidate.device)) + accept
        return state["loss"]


class EvolutionStrategies(torch.optim.Optimizer):
    def __init__(  # type: ignore[no-untyped-def]
        self,
        params,
        lr: float = 0.01,
        population: int = 32,
        sigma: float = 0.05,
        antithetic: bool = True,
        rank_shaping: bool = True,
    ):
        if lr <= 0 or sigma <= 0 or population < 2:
            raise ValueError(
                f"ES needs lr > 0, sigma > 0, population ≥ 2; got {lr}, {sigma}, {population}"
            )
        if antithetic and population % 2:
            raise ValueError(f"antithetic sampling needs an even population, got {population}")
        defaults = {
            "lr": lr,
            "population": population,
            "sigma": sigma,
            "antithetic": antithetic,
            "rank_shaping": rank_shaping,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: LossClosure) -> torch.Tensor:  # type: ignore[override]
        """One generation; returns the loss at the weights before the update."""
        params = _params(self)
        group = self.param_groups[0]
        n, sigma = group["population"], group["sigma"]
        loss = closure().detach().float()
        drawn = n // 2 if group["antithetic"] else n
        noise = [torch.randn((drawn, *p.shape), device=p.device, dtype=p.dtype) for p in params]
        if group["antithetic"]:
            noise = [torch.cat([e, -e]) for e in noise]
        fitness = []
        for i in range(n):
            member = [e[i] * sigma for e in noise]
            torch._foreach_add_(params, member)
            fitness.append(closure().detach().float())
            torch._foreach_sub_(params, member)
        f = torch.stack(fitness)
        if group["rank_shaping"]:
            f = f.argsort().argsort().float() / (n - 1) - 0.5
        else:
            f = (f - f.mean()) / (f.std() + 1e-12)
        for p, e in zip(params, noise, strict=True):
            estimate = torch.tensordot(f.to(e.dtype), e, dims=1) / (n * sigma)
            p.sub_(estimate, alpha=self._lr_of(p))
        return loss

    def _lr_of(self, param: torch.Tensor) -> float:
        for g in self.param_groups:
            if any(p is param for p in g["params"]):
                return g["lr"]
        raise KeyError("parameter not in this optimizer")
