"""Shadow models: vmapped training equal to independent fits, any network in eval mode when answering, balanced
masks, the cache."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from privacy_attacks.attacks.membership.shadow_models import (
    balanced_in_masks,
    partition_in_masks,
    provision_shadow_models,
    shadow_cache_path,
    subset_indices,
    train_shadow_models,
)
from privacy_attacks.errors import CheckpointError, ConfigError
from privacy_attacks.seeding import seeded
from tests.attacks.membership.conftest import RECIPE, TRAIN_SIZE, features

SMALL_VGG = {  # batch norm (running statistics: buffers) and dropout (the global RNG)
    "_target_": "privacy_attacks.models.SmallVGG",
    "image_shape": [3, 16, 16],
    "num_classes": 4,
    "width": 4,
    "stages": 2,
    "convs": 1,
    "norm": "batch",
    "dropout": 0.5,
}


def test_shadow_models_are_cached_by_config(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks))
    first, cached_first = provision_shadow_models(*args, [3, 4], context.cache_dir)
    second, cached_second = provision_shadow_models(*args, [3, 4], context.cache_dir)
    assert not cached_first and cached_second
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    _, other_seed_cached = provision_shadow_models(*args, [3, 5], context.cache_dir)
    assert not other_seed_cached
    _, other_images_cached = provision_shadow_models(
        RECIPE, context.attacker_images[20:40], *args[2:], [3, 4], context.cache_dir
    )
    assert not other_images_cached  # keyed by the images' content


def test_a_corrupt_shadow_cache_is_a_clear_error(context):
    masks = balanced_in_masks(2 * TRAIN_SIZE, 2, torch.Generator().manual_seed(0))
    args = (RECIPE, context.attacker_images[:20], context.attacker_labels[:20], subset_indices(masks), [0, 1])
    provision_shadow_models(*args, context.cache_dir)
    for path in context.cache_dir.glob("shadows-*.pt"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete"):
        provision_shadow_models(*args, context.cache_dir)


def test_stacked_shadow_training_equals_independent_fits(context):
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    masks = balanced_in_masks(20, 2, torch.Generator().manual_seed(0))
    indices = subset_indices(masks)
    together = train_shadow_models(RECIPE, images, labels, indices, seeds=[11, 12], progress=False)
    for s, seed in enumerate([11, 12]):
        alone = train_shadow_models(RECIPE, images, labels, indices[s : s + 1], seeds=[seed], progress=False)
        for name, value in alone.params.items():
            torch.testing.assert_close(together.params[name][s], value[0], rtol=1e-4, atol=1e-5)


def test_shadow_models_of_a_batch_norm_network_on_colour_images_answer_in_eval_mode():
    """Stacked fits of a network with batch norm and dropout keep each model's running statistics and are
    reproducible, and the stacked logits are each model's own eval-mode answers (not batch statistics of the
    queried images, no dropout)."""
    recipe = RECIPE.copy()
    recipe.net = SMALL_VGG
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(20, 3, 16, 16, generator=generator), torch.arange(20) % 4
    indices = subset_indices(balanced_in_masks(20, 2, generator))
    shadows = train_shadow_models(recipe, images, labels, indices, seeds=[1, 2], progress=False)
    again = train_shadow_models(recipe, images, labels, indices, seeds=[1, 2], progress=False)
    assert all(torch.equal(v, again.params[k]) for k, v in shadows.params.items())
    buffers = {k: v.clone() for k, v in shadows.buffers.items()}
    assert any(k.endswith("running_mean") and not torch.equal(v[0], v[1]) for k, v in buffers.items())
    logits = shadows.logits(images[:5])
    assert logits.shape == (2, 5, 4)
    for s in range(2):
        torch.testing.assert_close(logits[s], shadows.model(s)(images[:5]), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(buffers[k], v) for k, v in shadows.buffers.items())  # answering changed no statistic


def test_many_models_answer_in_smaller_chunks_with_the_same_logits(context):
    """The models x images of one forward are bounded (256 LeNet5s on 2,000 images at once need about 10 GB): more
    models read fewer images at a time, and the logits do not depend on the chunking."""
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    indices = subset_indices(balanced_in_masks(20, 4, torch.Generator().manual_seed(0)))
    shadows = train_shadow_models(RECIPE, images, labels, indices, seeds=[1, 2, 3, 4], progress=False)
    chunks: list[int] = []
    hook = shadows.template.register_forward_pre_hook(lambda module, args: chunks.append(args[0].shape[0]))
    try:
        whole = shadows.logits(images)
        assert chunks == [20]
        chunks.clear()
        bounded = shadows.logits(images, max_pairs=4 * 6)  # 4 models: 6 images a forward
    finally:
        hook.remove()
    assert chunks == [6, 6, 6, 2]
    torch.testing.assert_close(bounded, whole)


def test_balanced_masks_have_each_image_in_half_the_models():
    masks = balanced_in_masks(30, 8, torch.Generator().manual_seed(0))
    assert (masks.sum(dim=0) == 4).all() and (masks.sum(dim=1) == 15).all()


def private_recipe(**settings):
    from omegaconf import OmegaConf

    recipe = OmegaConf.create(OmegaConf.to_container(RECIPE))
    recipe.privacy = {"_target_": "privacy_attacks.defenses.DPSGD", "epsilon": 8.0, **settings}
    return recipe


def test_a_private_step_is_the_clipped_sum_of_the_sampled_examples_gradients_plus_noise_over_the_expected_batch():
    import torch.nn.functional as F
    from torch.func import stack_module_state

    from privacy_attacks.attacks.membership.shadow_models import PrivateShadowTraining
    from privacy_attacks.defenses import DPSGD
    from privacy_attacks.models import LeNet5

    torch.manual_seed(0)
    nets = [LeNet5(), LeNet5()]
    params, buffers = stack_module_state(nets)
    params = {k: v.detach() for k, v in params.items()}
    images, labels = torch.rand(2, 3, 1, 28, 28), torch.randint(0, 10, (2, 3))
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # model 0 sampled 2 examples, model 1 one
    noise = {k: torch.randn(v.shape) for k, v in params.items()}
    for clip in (1e6, 0.05):
        private = PrivateShadowTraining(
            DPSGD(noise_multiplier=0.5, max_grad_norm=clip), nets[0].to("meta"), n=10, batch_size=5, epochs=1
        )
        assert private.sample_rate == 0.5
        got = private.clipped_noisy_gradient(params, buffers, images, labels, weights, noise)
        for s, net in enumerate([LeNet5(), LeNet5()]):
            net.load_state_dict({k: v[s] for k, v in params.items()})
            expected = {k: 0.5 * clip * noise[k][s] for k in params}
            for m in range(3):
                if weights[s, m] == 0:
                    continue
                net.zero_grad()
                F.cross_entropy(net(images[s, m : m + 1]), labels[s, m : m + 1]).backward()
                norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in net.parameters()))
                factor = min(1.0, clip / (float(norm) + 1e-6))
                for k, p in net.named_parameters():
                    expected[k] = expected[k] + factor * p.grad
            for k in params:
                torch.testing.assert_close(got[k][s], expected[k] / 5.0, rtol=1e-4, atol=1e-6)


def test_private_stacked_shadow_training_equals_independent_private_fits_and_is_cached_apart(context):
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    indices = subset_indices(balanced_in_masks(20, 2, torch.Generator().manual_seed(0)))
    recipe = private_recipe()
    together = train_shadow_models(recipe, images, labels, indices, seeds=[11, 12], progress=False)
    plain = train_shadow_models(RECIPE, images, labels, indices, seeds=[11, 12], progress=False)
    assert not torch.allclose(together.params["logits.weight"], plain.params["logits.weight"])
    for s, seed in enumerate([11, 12]):
        alone = train_shadow_models(recipe, images, labels, indices[s : s + 1], seeds=[seed], progress=False)
        for name, value in alone.params.items():
            torch.testing.assert_close(together.params[name][s], value[0], rtol=1e-4, atol=1e-5)
    args = (images, labels, indices, [11, 12], context.cache_dir)
    _, _ = provision_shadow_models(RECIPE, *args)
    _, private_was_cached = provision_shadow_models(recipe, *args)
    assert not private_was_cached


class _StopFit(Exception):
    """Raised by a spy once it has what it observes."""


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items() if k.endswith("weight")}


@pytest.mark.mnist
def test_no_attacker_model_starts_from_the_weights_the_targets_fit_started_from(context, compose_attack, monkeypatch):
    """The target's recipe seed (0) and the attack's seed (0) are the same number here: the case where an attacker
    model seeded like the target would start from the target's exact weights. Both sides are observed: the target's
    weights at the start of its fit (a callback of ``fit_classifier``), every shadow model's as the stacked fit takes
    them (``stack_module_state``) and each proxy's as distillation receives it."""
    import lightning as L

    from privacy_attacks.attacks.membership import proxy, shadow_models
    from privacy_attacks.attacks.membership.lira import LiRA
    from privacy_attacks.attacks.membership.proxy import ProxyAttack
    from privacy_attacks.attacks.membership.shokri import ShadowAttack
    from privacy_attacks.training import fit_classifier
    from tests.attacks.membership.conftest import TRAINER

    class AtTrainStart(L.Callback):
        def on_train_start(self, trainer, pl_module):
            target.update(_weights(pl_module.net))
            raise _StopFit

    target = {}
    with pytest.raises(_StopFit):
        fit_classifier(
            RECIPE, compose_attack(["attack=membership"]).data, TRAINER, RECIPE.seed, callbacks=[AtTrainStart()]
        )
    assert context.seed == RECIPE.seed == 0 and len(target) == 5  # LeNet5: 3 convolutions + 2 linear layers

    started, real_stack, real_distil = [], shadow_models.stack_module_state, proxy.distil

    def spy_stack(models):
        started.extend(("shadow", _weights(net)) for net in models)
        return real_stack(models)

    def spy_distil(api, images, net, *args, **kwargs):
        started.append(("proxy", _weights(net)))
        return real_distil(api, images, net, *args, **kwargs)

    monkeypatch.setattr(shadow_models, "stack_module_state", spy_stack)
    monkeypatch.setattr(proxy, "distil", spy_distil)
    ProxyAttack(**features("sorted", "loss"), epochs=1, reference=True)(context)  # the proxy and the reference proxy
    shokri = ShadowAttack(**features("sorted", "label", "loss"), num_shadows=2, epochs=1)
    shokri(context)  # Shokri's shadow models (offline LiRA's too)
    LiRA(num_shadows=2, online=True)(context)  # online LiRA's (RMIA's reference models)
    assert [kind for kind, _ in started] == ["proxy", "proxy"] + ["shadow"] * 4
    for _, weights in started:
        assert weights.keys() == target.keys()
        assert not any(torch.equal(weights[name], target[name]) for name in target)


@pytest.mark.parametrize(("population", "subset", "models"), [(5500, 1000, 64), (20, 4, 10), (21, 4, 7)])
def test_partition_masks_give_every_model_a_target_sized_subset_and_every_image_about_its_share(
    population, subset, models
):
    masks = partition_in_masks(population, subset, models, torch.Generator().manual_seed(0))
    assert masks.shape == (models, population) and (masks.sum(dim=1) == subset).all()
    groups = population // subset
    for start in range(0, models - groups + 1, groups):  # each full group: disjoint subsets
        assert (masks[start : start + groups].sum(dim=0) <= 1).all()
    share = models * subset / population
    counts = masks.sum(dim=0).double()
    assert abs(float(counts.mean()) - share) < 1e-9 and int(counts.max()) <= -(-models // groups)
    again = partition_in_masks(population, subset, models, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def _colour_images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(20, 3, 16, 16, generator=generator), torch.arange(20) % 4


def _one_batch_recipe(**keys):
    """RECIPE with every model's 10 images in one batch: one optimiser step per epoch."""
    return OmegaConf.merge(RECIPE, {"batch_size": TRAIN_SIZE, **keys})


def test_a_network_vmap_cannot_stack_is_one_line_naming_what_to_change(context):
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    indices = subset_indices(balanced_in_masks(20, 2, torch.Generator().manual_seed(0)))
    recipe = OmegaConf.merge(RECIPE, {"net": {"_target_": "tests.nets.Branchy"}})
    message = "Branchy cannot run as a stack of models under torch.vmap .*torch.where.*net@attacker_net="
    with pytest.raises(ConfigError, match=message):
        train_shadow_models(recipe, images, labels, indices, seeds=[5, 6], progress=False)


def test_shadow_models_keep_the_recipes_moving_average_of_their_weights(context):
    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    indices = subset_indices(balanced_in_masks(20, 2, torch.Generator().manual_seed(0)))

    def fit(**keys):
        return train_shadow_models(_one_batch_recipe(**keys), images, labels, indices, seeds=[5, 6], progress=False)

    after = [fit(max_epochs=epochs).params for epochs in (1, 2, 3)]  # the weights after each of three steps
    averaged = fit(max_epochs=3, ema_decay=0.5).params
    for name, value in averaged.items():  # the first step copied, then 0.5 * average + 0.5 * weights
        expected = 0.5 * (0.5 * after[0][name] + 0.5 * after[1][name]) + 0.5 * after[2][name]
        torch.testing.assert_close(value, expected)


def test_the_moving_average_of_a_batch_norm_network_is_torchs_averaged_model_with_its_buffers():
    """What Lightning's EMAWeightAveraging keeps of the target (AveragedModel, get_ema_avg_fn, buffers included),
    running statistics and their batch count too."""
    from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

    images, labels = _colour_images()
    indices = subset_indices(balanced_in_masks(20, 2, torch.Generator().manual_seed(0)))

    def fit(**keys):
        recipe = _one_batch_recipe(net=SMALL_VGG, **keys)
        return train_shadow_models(recipe, images, labels, indices, seeds=[5, 6], progress=False)

    steps = [fit(max_epochs=epochs).model(0) for epochs in (1, 2, 3)]  # model 0 after each of three steps
    reference = AveragedModel(steps[0], avg_fn=get_ema_avg_fn(0.9), use_buffers=True)
    for net in steps:
        reference.update_parameters(net)
    averaged = fit(max_epochs=3, ema_decay=0.9)
    expected = reference.module.state_dict()
    got = averaged.model(0).state_dict()
    assert any(k.endswith("num_batches_tracked") for k in got) and any(k.endswith("running_var") for k in got)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_shadow_models_train_with_the_recipes_label_smoothing_and_are_cached_apart(context, caplog, monkeypatch):
    from privacy_attacks.attacks.membership import shadow_models

    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    indices = subset_indices(balanced_in_masks(20, 2, torch.Generator().manual_seed(0)))
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1.0}
    recipe = _one_batch_recipe(max_epochs=1, optimizer=sgd, label_smoothing=0.2)
    smoothed = train_shadow_models(recipe, images, labels, indices, seeds=[5, 6], progress=False)
    for s, seed in enumerate([5, 6]):  # one SGD step on the smoothed cross-entropy, from the model's own init
        with seeded(seed, "init"):
            net = instantiate(recipe.net)
        F.cross_entropy(net(images[indices[s]]), labels[indices[s]], label_smoothing=0.2).backward()
        for name, parameter in net.named_parameters():
            torch.testing.assert_close(smoothed.params[name][s], (parameter - parameter.grad).detach())
    plain = train_shadow_models(_one_batch_recipe(max_epochs=1, optimizer=sgd), images, labels, indices, [5, 6])
    assert not torch.allclose(plain.params["logits.weight"], smoothed.params["logits.weight"])

    args = (images, labels, indices, [5, 6], context.cache_dir)
    assert not provision_shadow_models(_one_batch_recipe(max_epochs=1), *args)[1]
    assert not provision_shadow_models(_one_batch_recipe(max_epochs=1, label_smoothing=0.2), *args)[1]
    specs = []  # models cached before they followed the recipe's regularisers trained without them: another key
    real_cache_path = shadow_models.cache.cache_path
    monkeypatch.setattr(shadow_models.cache, "cache_path", lambda *a: specs.append(a[2]) or real_cache_path(*a))
    for keys in ({}, {"label_smoothing": 0.2}, {"ema_decay": 0.9}):
        shadow_cache_path(context.cache_dir, _one_batch_recipe(**keys), images, labels, indices, [5, 6])
    assert [spec.get("regularisers") for spec in specs] == [None, "followed", "followed"]
    with caplog.at_level(logging.WARNING):
        provision_shadow_models(_one_batch_recipe(max_epochs=1, early_stopping_patience=3), *args)
    assert "train all 1 epochs of their recipe: its early_stopping_patience=3" in caplog.text


@pytest.mark.parametrize("network", ["lenet5", "lenet5_dpsgd", "batch_norm_and_dropout"])
def test_an_interrupted_shadow_fit_goes_on_from_its_last_epoch_to_the_same_models(
    context, tmp_path, monkeypatch, caplog, network
):
    from privacy_attacks.attacks.membership import shadow_models

    images, labels = context.attacker_images[:20], context.attacker_labels[:20]
    indices = subset_indices(balanced_in_masks(20, 2, torch.Generator().manual_seed(0)))
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 3}
    recipe = OmegaConf.merge(
        private_recipe() if network == "lenet5_dpsgd" else RECIPE, {"max_epochs": 3, "scheduler": cosine}
    )
    if network == "batch_norm_and_dropout":  # running statistics, and dropout masks from the global RNG
        images, labels = _colour_images()
        recipe.net = SMALL_VGG
    recipe.ema_decay = 0.9
    whole, _ = provision_shadow_models(recipe, images, labels, indices, [3, 4], tmp_path / "whole")

    real_save, saved = shadow_models.EpochCheckpoint.save, []

    def save_then_stop(checkpoint, state):  # Ctrl-C right after the first epoch's state is saved
        real_save(checkpoint, state)
        saved.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(shadow_models.EpochCheckpoint, "save", save_then_stop)
    args = (recipe, images, labels, indices, [3, 4], tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        provision_shadow_models(*args, checkpoint_every_s=0)
    assert saved == [1] and len(list((tmp_path / "cut").glob("shadows-*.pt.partial"))) == 1
    monkeypatch.setattr(shadow_models.EpochCheckpoint, "save", real_save)
    with caplog.at_level(logging.INFO, logger=shadow_models.__name__):
        resumed, cached = provision_shadow_models(*args, checkpoint_every_s=0)
    assert "Going on from epoch 1 of an interrupted fit" in caplog.text  # not trained from the start again
    assert not cached and not list((tmp_path / "cut").glob("*.partial"))  # cached whole, the partial state gone
    for part in ("params", "buffers"):
        for name, value in getattr(whole, part).items():
            assert torch.equal(getattr(resumed, part)[name], value), name
