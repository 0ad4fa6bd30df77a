"""What an attacker observes inside a network: the output of one of its layers, named by module path.

A layer is either one of the network's named blocks (``LAYERS`` of a
:class:`~privacy_attacks.models.layers.NamedBlocks` network: LeNet5's ``conv1`` ... ``logits``), read by its
``features``, or any submodule's path as ``net.named_modules()`` names it (``conv2.0``, ``body.stage2``,
``layer3.1.conv2`` of a torchvision ResNet), read by a forward hook that stops the forward pass there.
"""

from __future__ import annotations

from torch import Tensor, nn

from privacy_attacks.errors import ConfigError

LISTED_LAYERS = 40  # module paths listed in a message before "... and N more"


class _Reached(Exception):
    """Raised by the hook once the observed layer has run: the rest of the forward pass is not needed."""


def observable_layers(net: nn.Module) -> tuple[str, ...]:
    """Every layer an attacker can observe: the named blocks (``LAYERS``) first, then every other module path."""
    named = tuple(getattr(net, "LAYERS", ()))
    return named + tuple(name for name, _ in net.named_modules() if name and name not in named)


def check_layer(net: nn.Module, layer: str, key: str = "layer") -> None:
    """:class:`ConfigError` naming ``key`` and listing the network's layers unless ``layer`` is one of them."""
    layers = observable_layers(net)
    if layer in layers:
        return
    listed = ", ".join(layers[:LISTED_LAYERS])
    more = (
        f" ... and {len(layers) - LISTED_LAYERS} more (print the network to see them)"
        if len(layers) > LISTED_LAYERS
        else ""
    )
    raise ConfigError(f"{key}={layer!r} is not a layer of {type(net).__name__}: choose one of {listed}{more}.")


def layer_output(net: nn.Module, layer: str, images: Tensor) -> Tensor:
    """``net``'s activation at ``layer`` for ``images`` (N, C, H, W): (N, ...), differentiable in ``images``.

    A named block is read by ``net.features``; any other module path by a forward hook on that module (its output
    at its first call), the forward pass stopping there.
    """
    if layer in getattr(net, "LAYERS", ()) and hasattr(net, "features"):
        return net.features(images)[layer]
    module = net.get_submodule(layer)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        captured.append(output)
        raise _Reached

    handle = module.register_forward_hook(hook)
    try:
        net(images)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"layer={layer!r} of {type(net).__name__} is never called by its forward pass.")
    if not isinstance(captured[0], Tensor):
        raise ConfigError(
            f"layer={layer!r} of {type(net).__name__} outputs {type(captured[0]).__name__}, not a tensor."
        )
    return captured[0]
