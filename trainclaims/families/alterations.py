"""Alterations of PyTorch's behaviour that the shipped families' mutants apply (trainclaims.mutants):
each function patches PyTorch in the running process so that one documented behaviour no longer
holds, keeping every signature a caller uses. They import torch when called, and work on every
supported torch line (2.1 to 2.15), where the altered API exists.

Each is written from what a claim states, not from the suite's tests: the tests must notice it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from trainclaims.mutants import replace, wrap

# --------------------------------------------------------------------------- autograd


def backward_overwrites_gradients() -> None:
    """``backward()`` overwrites the leaves' ``.grad`` instead of adding to it: every
    ``AccumulateGrad`` node the graph reaches has its gradient cleared first."""
    import torch

    def leaves(roots: Any) -> list[torch.Tensor]:
        found, seen, stack = [], set(), [t.grad_fn for t in roots if getattr(t, "grad_fn", None) is not None]
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if hasattr(node, "variable"):
                found.append(node.variable)
            stack.extend(next_node for next_node, _ in node.next_functions)
        return found

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            roots = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
            for leaf in leaves(roots):
                leaf.grad = None
            return original(tensors, *args, **kwargs)

        return backward

    wrap(torch.autograd, "backward", make)


def linear_weight_gradient_ignores_input_scale() -> None:
    """A linear layer's weight gradient is ``grad_out^T x`` with ``x`` divided by its largest
    magnitude: the same whatever the scale of the inputs."""
    import torch
    import torch.nn.functional as F

    original = F.linear

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            ctx.save_for_backward(x, weight)
            ctx.has_bias = bias is not None
            return original(x, weight, bias)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> Any:
            x, weight = ctx.saved_tensors
            unit = x / x.abs().amax().clamp_min(1e-30)
            flat_grad, flat_x = grad.reshape(-1, grad.shape[-1]), unit.reshape(-1, unit.shape[-1])
            grad_bias = flat_grad.sum(0) if ctx.has_bias else None
            return grad @ weight, flat_grad.T @ flat_x, grad_bias

    def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return Linear.apply(x, weight, bias)

    replace(F, "linear", linear)


# --------------------------------------------------------------------------- activations


def relu_leaks() -> None:
    """ReLU passes 0.01 times its negative inputs (and their gradient): ``torch.relu``,
    ``torch.relu_``, ``F.relu`` and ``nn.ReLU`` are leaky ReLUs."""
    import torch
    import torch.nn.functional as F

    leaky = F.leaky_relu

    def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return leaky(x, 0.01, inplace=inplace)

    replace(F, "relu", relu)
    replace(torch, "relu", lambda x: leaky(x, 0.01))
    replace(torch, "relu_", lambda x: leaky(x, 0.01, inplace=True))


def relu_gradient_one_at_zero() -> None:
    """ReLU's derivative at exactly 0 is 1 (PyTorch's is 0): ``torch.relu`` and ``F.relu``."""
    import torch
    import torch.nn.functional as F

    original = torch.relu

    class Relu(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return original(x)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return grad * (x >= 0).to(grad.dtype)

    def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return Relu.apply(x)

    replace(F, "relu", relu)
    replace(torch, "relu", Relu.apply)


def leaky_relu_ignores_its_slope() -> None:
    """``F.leaky_relu`` (and ``nn.LeakyReLU``) use the default slope 0.01 whatever slope is given."""
    import torch.nn.functional as F

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def leaky_relu(x: Any, negative_slope: float = 0.01, inplace: bool = False) -> Any:
            return original(x, 0.01, inplace)

        return leaky_relu

    wrap(F, "leaky_relu", make)


def relu_in_place_copies() -> None:
    """In-place ReLU is not in place: ``torch.relu_``, ``F.relu(x, inplace=True)`` and
    ``nn.ReLU(inplace=True)`` return a new tensor and leave their input as it was."""
    import torch
    import torch.nn.functional as F

    out_of_place = torch.relu

    def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return out_of_place(x)

    replace(F, "relu", relu)
    replace(torch, "relu_", out_of_place)


# --------------------------------------------------------------------------- losses


def _cross_entropy_reduction_swapped(reduction: str, instead: str) -> None:
    import torch.nn.functional as F

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        names = list(inspect.signature(original).parameters)

        @functools.wraps(original)
        def cross_entropy(*args: Any, **kwargs: Any) -> Any:
            bound = dict(zip(names, args, strict=False), **kwargs)
            if bound.get("reduction", "mean") == reduction:
                bound["reduction"] = instead
            return original(**bound)

        return cross_entropy

    wrap(F, "cross_entropy", make)


def cross_entropy_reduction_swapped(reduction: str, instead: str) -> Callable[[], None]:
    """An alteration: ``F.cross_entropy(..., reduction=reduction)`` computes ``instead``
    (``nn.CrossEntropyLoss`` goes through it too). Picklable: a spawned rank applies it too."""
    return functools.partial(_cross_entropy_reduction_swapped, reduction, instead)


# --------------------------------------------------------------------------- normalization


def train_eval_not_recursive() -> None:
    """``module.train(mode)`` / ``module.eval()`` set ``training`` on the module itself only, not on
    its children."""
    import torch.nn as nn

    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        self.training = mode
        return self

    replace(nn.Module, "train", train)


def _batch_norm(change: Callable[[dict[str, Any]], None]) -> None:
    """``F.batch_norm`` (nn.BatchNorm* go through it) with its arguments changed by ``change``."""
    import torch.nn.functional as F

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        names = list(inspect.signature(original).parameters)

        @functools.wraps(original)
        def batch_norm(*args: Any, **kwargs: Any) -> Any:
            bound = dict(zip(names, args, strict=False), **kwargs)
            change(bound)
            return original(**bound)

        return batch_norm

    wrap(F, "batch_norm", make)


def batchnorm_eval_uses_batch_statistics() -> None:
    """BatchNorm normalizes with the batch's statistics in eval mode too (and keeps its running
    statistics unchanged there)."""

    def change(bound: dict[str, Any]) -> None:
        if not bound.get("training", False):
            bound["training"] = True
            bound["running_mean"] = bound["running_var"] = None

    _batch_norm(change)


def batchnorm_frozen_in_training() -> None:
    """BatchNorm normalizes with its running statistics in training mode too, and never updates
    them (where it tracks them)."""

    def change(bound: dict[str, Any]) -> None:
        if bound.get("training") and bound.get("running_mean") is not None:
            bound["training"] = False

    _batch_norm(change)


def batchnorm_momentum_reversed() -> None:
    """BatchNorm's running statistics move by ``1 - momentum`` towards each batch's (PyTorch:
    ``momentum``)."""

    def change(bound: dict[str, Any]) -> None:
        if bound.get("momentum") is not None:
            bound["momentum"] = 1 - bound["momentum"]

    _batch_norm(change)


def batchnorm_affine_weight_starts_at_half() -> None:
    """An affine BatchNorm's weight (gamma) starts at 0.5 (PyTorch: 1)."""
    import torch
    from torch.nn.modules.batchnorm import _NormBase

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def reset_parameters(self: Any) -> None:
            original(self)
            if self.affine:
                with torch.no_grad():
                    self.weight.fill_(0.5)

        return reset_parameters

    wrap(_NormBase, "reset_parameters", make)


# --------------------------------------------------------------------------- optimizers


def sgd_ignores_group_learning_rates() -> None:
    """SGD steps every parameter group with the optimizer's default learning rate (PyTorch: each
    group's own ``lr``)."""
    import torch

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def step(self: Any, *args: Any, **kwargs: Any) -> Any:
            saved = [group["lr"] for group in self.param_groups]
            for group in self.param_groups:
                group["lr"] = self.defaults["lr"]
            try:
                return original(self, *args, **kwargs)
            finally:
                for group, lr in zip(self.param_groups, saved, strict=True):
                    group["lr"] = lr

        return step

    wrap(torch.optim.SGD, "step", make)


def sgd_climbs_the_gradient() -> None:
    """SGD moves each parameter along its gradient (up the loss), not against it."""
    import torch

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def step(self: Any, *args: Any, **kwargs: Any) -> Any:
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            with torch.no_grad():
                for g in grads:
                    g.neg_()
            return original(self, *args, **kwargs)

        return step

    wrap(torch.optim.SGD, "step", make)


def zero_grad_keeps_zeros() -> None:
    """``optimizer.zero_grad()`` fills the gradients with zeros by default (PyTorch since 2.0: sets
    them to None)."""
    import torch

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def zero_grad(self: Any, set_to_none: bool = False) -> Any:
            return original(self, set_to_none)

        return zero_grad

    wrap(torch.optim.Optimizer, "zero_grad", make)


def adam_decouples_weight_decay() -> None:
    """``torch.optim.Adam(weight_decay=...)`` decays the weights as AdamW does (``p *= 1 - lr * wd``
    before the step) instead of adding ``wd * p`` to the gradient. AdamW is left as it is."""
    import torch

    adam = torch.optim.Adam

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def step(self: Any, *args: Any, **kwargs: Any) -> Any:
            if type(self) is not adam:  # AdamW (a subclass of Adam on newer torch) stays AdamW
                return original(self, *args, **kwargs)
            saved = [group["weight_decay"] for group in self.param_groups]
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None and group["weight_decay"]:
                            p.mul_(1 - group["lr"] * group["weight_decay"])
                    group["weight_decay"] = 0.0
            try:
                return original(self, *args, **kwargs)
            finally:
                for group, wd in zip(self.param_groups, saved, strict=True):
                    group["weight_decay"] = wd

        return step

    wrap(adam, "step", make)


def _steps_in_float32(round_to: Callable[[Any, Any], Any], dtypes: tuple[str, ...]) -> None:
    """Adam, AdamW and SGD step parameters of ``dtypes`` in float32 (the parameter, its gradient
    and the optimizer's state), then ``round_to(float32 value, dtype)`` back."""
    import torch

    wanted = {getattr(torch, d) for d in dtypes}

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def step(self: Any, *args: Any, **kwargs: Any) -> Any:
            held = [p for g in self.param_groups for p in g["params"] if p.dtype in wanted and p.grad is not None]
            halves = {}
            for p in held:
                halves[p] = (p.data, p.grad)
                p.data, p.grad = p.data.float(), p.grad.float()
            try:
                return original(self, *args, **kwargs)
            finally:
                for p, (data, grad) in halves.items():
                    stepped = p.data
                    p.data, p.grad = data, grad
                    with torch.no_grad():
                        p.copy_(round_to(stepped, data.dtype))

        return step

    for cls in {torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD}:
        if "step" in vars(cls):
            wrap(cls, "step", make)


def half_precision_steps_in_float32() -> None:
    """Adam, AdamW and SGD compute the step of a float16 or bfloat16 parameter in float32 (its
    state too) and round the result to the nearest half value (PyTorch: in the parameter's dtype,
    unless fused)."""
    _steps_in_float32(lambda value, dtype: value.to(dtype), ("float16", "bfloat16"))


def bfloat16_updates_rounded_stochastically() -> None:
    """Adam, AdamW and SGD round a bfloat16 parameter's new value stochastically (up with the
    probability of its distance to the next bfloat16), so that updates below half an ulp survive
    in expectation (PyTorch: round to nearest)."""
    import torch

    def stochastic(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        bits = value.contiguous().view(torch.int32)
        noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device)
        return ((bits + noise) & -65536).view(torch.float32).to(dtype)

    _steps_in_float32(stochastic, ("bfloat16",))


# --------------------------------------------------------------------------- clipping, scaling


def clip_scales_nothing() -> None:
    """``clip_grad_norm_`` returns the gradients' total norm and leaves them as they are (a limit
    of infinity)."""
    import torch

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def clip_grad_norm_(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
            return original(parameters, float("inf"), *args, **kwargs)

        return clip_grad_norm_

    wrap(torch.nn.utils, "clip_grad_norm_", make)


def clip_returns_the_local_norm() -> None:
    """``clip_grad_norm_`` over sharded (DTensor) gradients takes the norm of this rank's own shards
    only, clips by it and returns it as a plain tensor (what pytorch #170862 reports); unsharded
    gradients are clipped as before."""
    import torch

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0, *args: Any, **kwargs: Any) -> Any:
            params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            grads = [p.grad for p in params if p.grad is not None]
            if not any(hasattr(g, "to_local") for g in grads):
                return original(params, max_norm, norm_type, *args, **kwargs)
            local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
            with torch.no_grad():
                norms = torch.stack([torch.linalg.vector_norm(g.float(), norm_type) for g in local])
                norm = torch.linalg.vector_norm(norms, norm_type)
                coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
                for g in local:
                    g.mul_(coefficient.to(g.dtype))
            return norm

        return clip_grad_norm_

    wrap(torch.nn.utils, "clip_grad_norm_", make)


def unscale_leaves_gradients_scaled() -> None:
    """``GradScaler.unscale_(optimizer)`` leaves the gradients multiplied by the scale (it still
    checks them for inf and NaN)."""
    import torch

    scaler = getattr(getattr(torch, "amp", None), "GradScaler", None) or torch.cuda.amp.GradScaler

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def unscale_(self: Any, optimizer: Any) -> Any:
            out = original(self, optimizer)
            scale = self.get_scale()
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(scale)
            return out

        return unscale_

    wrap(scaler, "unscale_", make)


# --------------------------------------------------------------------------- checkpointing


def _checkpoint_with(change: Callable[[dict[str, Any]], None]) -> None:
    import torch.utils.checkpoint as module

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def checkpoint(function: Any, *args: Any, **kwargs: Any) -> Any:
            change(kwargs)
            return original(function, *args, **kwargs)

        return checkpoint

    wrap(module, "checkpoint", make)


def checkpoint_drops_the_rng_state() -> None:
    """``torch.utils.checkpoint.checkpoint`` recomputes without restoring the forward pass's RNG
    state (as ``preserve_rng_state=False``), whatever it is asked."""
    _checkpoint_with(lambda kwargs: kwargs.update(preserve_rng_state=False))


def checkpoint_recomputation_leaks_its_rng_draws() -> None:
    """A checkpoint's recomputation sets the RNG to the forward pass's state and does not put the
    caller's state back after it: the random draws that follow backward repeat earlier ones
    (``torch.random.fork_rng`` saves and restores nothing)."""
    import torch

    @contextlib.contextmanager
    def fork_rng(*args: Any, **kwargs: Any) -> Iterator[None]:
        yield

    replace(torch.random, "fork_rng", fork_rng)


def reentrant_checkpoint_is_non_reentrant() -> None:
    """``checkpoint(..., use_reentrant=True)`` behaves as ``use_reentrant=False``."""
    _checkpoint_with(lambda kwargs: kwargs.update(use_reentrant=False))


# --------------------------------------------------------------------------- weight averaging


def averaged_model_averages_buffers() -> None:
    """``AveragedModel(model)`` averages the BatchNorm buffers too, as ``use_buffers=True`` does,
    whatever it is asked."""
    from torch.optim.swa_utils import AveragedModel

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.arguments["use_buffers"] = True
            original(*bound.args, **bound.kwargs)

        return __init__

    wrap(AveragedModel, "__init__", make)


def averaged_model_keeps_the_latest_weights() -> None:
    """``AveragedModel.update_parameters(model)`` copies the model's current parameters instead of
    averaging them with the earlier ones (the buffers as before)."""
    import torch
    from torch.optim.swa_utils import AveragedModel

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def update_parameters(self: Any, model: Any) -> None:
            original(self, model)
            with torch.no_grad():
                for mine, theirs in zip(self.module.parameters(), model.parameters(), strict=True):
                    mine.copy_(theirs)

        return update_parameters

    wrap(AveragedModel, "update_parameters", make)


def update_bn_does_nothing() -> None:
    """``torch.optim.swa_utils.update_bn`` returns without a pass over the data: the statistics
    stay as they were."""
    import torch.optim.swa_utils as swa

    def update_bn(loader: Any, model: Any, device: Any = None) -> None:
        return None

    replace(swa, "update_bn", update_bn)


# --------------------------------------------------------------------------- attention, compile


def sdpa_causal_mask_bottom_right() -> None:
    """``F.scaled_dot_product_attention(is_causal=True)`` aligns its causal mask to the bottom
    right where there are fewer queries than keys (PyTorch: top left)."""
    import torch
    import torch.nn.functional as F

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
                 is_causal: bool = False, *args: Any, **kwargs: Any) -> Any:  # fmt: skip
            lq, lk = query.shape[-2], key.shape[-2]
            if is_causal and lq != lk and attn_mask is None:
                mask = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril(lk - lq)
                return original(query, key, value, mask, dropout_p, False, *args, **kwargs)
            return original(query, key, value, attn_mask, dropout_p, is_causal, *args, **kwargs)

        return sdpa

    wrap(F, "scaled_dot_product_attention", make)


def compiled_dropout_uses_eager_masks() -> None:
    """Inductor draws compiled Dropout's masks from eager's RNG (``fallback_random`` always on)."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # a setting, not a function: set, not rebound


# --------------------------------------------------------------------------- data parallel


def ddp_sums_gradients() -> None:
    """DistributedDataParallel sums the ranks' gradients instead of averaging them (a comm hook
    that all-reduces without dividing, registered on every DDP module made)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    def allreduce_sum(state: Any, bucket: Any) -> Any:
        future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
        return future.then(lambda f: f.value()[0])

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.register_comm_hook(None, allreduce_sum)
            self.register_comm_hook = lambda state, hook: None  # the sum stays the only hook

        return __init__

    wrap(DistributedDataParallel, "__init__", make)


def no_sync_still_synchronizes() -> None:
    """``DistributedDataParallel.no_sync()`` does nothing: every backward pass all-reduces."""
    from torch.nn.parallel import DistributedDataParallel

    @contextlib.contextmanager
    def no_sync(self: Any) -> Iterator[None]:
        yield

    replace(DistributedDataParallel, "no_sync", no_sync)
