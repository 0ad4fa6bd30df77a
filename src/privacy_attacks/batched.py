"""Forward passes over many images at once, in chunks, without gradients: the one loop every attack uses to read a
network's answers for a whole set of images (the target's API, shadow models, students, feature layers)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn


def net_device(net: nn.Module) -> torch.device:
    """Where ``net``'s parameters are (the CPU for a network without any)."""
    return next(iter(net.parameters()), torch.empty(0)).device


@torch.no_grad()
def in_batches(
    fn: Callable[..., Tensor],
    *inputs: Tensor,
    batch_size: int,
    device: torch.device | str | None = None,
    out: torch.device | str | None = "cpu",
    dim: int = 0,
) -> Tensor:
    """``fn`` applied to consecutive chunks of ``batch_size`` rows of ``inputs`` (each (N, ...), chunked alike),
    each chunk moved to ``device`` first (None: left where it is), and its outputs concatenated along ``dim``
    on ``out`` (None: where ``fn`` computed them). The numbers of one call on all N rows where its activations fit
    in memory, chunk for chunk; N = 0 calls ``fn`` once on the empty inputs, so the output keeps its shape."""
    n = len(inputs[0])
    parts = []
    for start in range(0, max(n, 1), batch_size):
        chunk = [x[start : start + batch_size] for x in inputs]
        part = fn(*(chunk if device is None else [x.to(device) for x in chunk]))
        parts.append(part if out is None else part.to(out))
    return torch.cat(parts, dim=dim)


def vmap_refusal(net: nn.Module, images: Tensor) -> str | None:
    """Why copies of ``net`` cannot run as one stacked model under :func:`torch.vmap` (a sentence: its forward
    branches on the values of its tensors, ``if x.max() > 0``, or calls what vmap does not support), or None when they
    can, or when ``net`` cannot run on them alone either (its own error is for the caller to meet): two copies run on
    two of ``images`` (N, C, H, W), without gradients, the RNG states left as they were."""
    from torch.func import functional_call, stack_module_state

    device = net_device(net)
    sample = images[:2].to(device)
    params, buffers = stack_module_state([net, net])
    template = copy.deepcopy(net).to("meta")
    forward = torch.vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), randomness="different")
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            net(sample)
        except Exception:  # noqa: BLE001 - not vmap's doing: the caller's own use of the network says what is wrong
            return None
        try:
            forward(params, buffers, sample.unsqueeze(0).expand(2, *sample.shape))
        except RuntimeError as error:
            reason = str(error).split("\n")[0].split(". ")[0]
            return f"{type(net).__name__} cannot run as a stack of models under torch.vmap ({reason})"
    return None
