"""Self-tests of the training engines: the batched and side-by-side engines give what training
one config at a time gives, and threads do not mix their runs. They encode no claim: the S000
sweep stands on them."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from trainclaims.families.s000 import variants
from trainclaims.families.seed.batched import train_batched
from trainclaims.families.seed.data import Dataset
from trainclaims.families.seed.engine import TrainConfig, build_model, train
from trainclaims.families.seed.runs import TrainingCache
from trainclaims.families.seed.side_by_side import train_side_by_side


def tiny_data(device: str = "cpu"):
    """500 train / 200 test random float64 1x4x5 images, 10 labels: for checking the engine itself."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(n, 1, 4, 5, generator=g, dtype=torch.float64).to(device) for n in (500, 200)]
    labels = [torch.randint(10, (n,), generator=g).to(device) for n in (500, 200)]
    return Dataset("tiny", images[0], labels[0], images[1], labels[1], "random")


def test_training_the_variants_batched_gives_what_training_them_one_by_one_gives(device):
    """The sweep trains batched over variants on accelerators (trainclaims.families.seed.batched): on float64 it
    must reproduce the one-by-one runs (measured: identical on CPU)."""

    tiny = tiny_data(device)
    configs = [c.with_(epochs=2, batch_size=50, dtype="float64", hidden=16) for c in variants(0).values()]
    for one, batched in zip([train(c, tiny) for c in configs], train_batched(configs, tiny), strict=True):
        torch.testing.assert_close(batched.loss, one.loss, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(batched.grad_norm, one.grad_norm, atol=1e-12, rtol=1e-10)
        assert batched.test_accuracy == one.test_accuracy
        assert batched.dead_fraction == one.dead_fraction


def test_the_training_cache_trains_variants_of_several_seeds_at_once_as_one_by_one(device):
    """S000-04..06 ask for several seeds' variants in one call; on CUDA the cache batches each
    seed's variants apart (one call with two seeds raised "batched training needs one seed" on
    the first GPU run, H100, torch 2.11)."""
    tiny = tiny_data(device)
    configs = {
        f"{name} seed {seed}": c.with_(epochs=1, batch_size=50, dtype="float64", hidden=16)
        for seed in (1, 2)
        for name, c in variants(seed).items()
        if name in ("baseline", "x255-W1W2/255-lr/255")
    }
    many = TrainingCache().many(configs, tiny)
    assert list(many) == list(configs)
    for name, config in configs.items():
        one = train(config, tiny)
        torch.testing.assert_close(many[name].loss, one.loss, atol=1e-12, rtol=1e-10, msg=name)
        assert many[name].test_accuracy == one.test_accuracy, name


def test_models_built_in_threads_get_their_own_seeds_initial_weights():
    """nn init draws from the process-wide generator; build_model seeds it per config, so threads
    building at once must take turns (measured without the lock: a side-by-side sweep's baseline
    started from mixed weights in 2 of 3 rounds)."""
    configs = [TrainConfig(model="fc", seed=seed) for seed in range(8)]
    expected = [build_model(c, 3072, 10, torch.device("cpu")).fc1.weight for c in configs]
    start = threading.Barrier(len(configs))

    def build(config):
        start.wait()
        return build_model(config, 3072, 10, torch.device("cpu")).fc1.weight

    with ThreadPoolExecutor(len(configs)) as pool:
        built = list(pool.map(build, configs))
    mixed = [c.seed for c, w, e in zip(configs, built, expected, strict=True) if not torch.equal(w, e)]
    assert not mixed, f"seeds {mixed} got other initial weights when built in threads"


def test_training_the_variants_side_by_side_gives_what_training_them_one_by_one_gives():
    """On CPU the sweep trains its variants in threads (trainclaims.families.seed.side_by_side): each must get its
    own seed's initial weights (the global RNG is shared) and its own results, in order."""

    tiny_run = {"epochs": 1, "batch_size": 50, "dtype": "float64", "hidden": 16}
    configs = [c.with_(**tiny_run, seed=i) for i, c in enumerate(variants().values())]
    threads = torch.get_num_threads()
    tiny = tiny_data()
    alone = [train(c, tiny) for c in configs]
    for one, side in zip(alone, train_side_by_side(configs, tiny), strict=True):
        assert side.config == one.config
        torch.testing.assert_close(side.loss, one.loss, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(side.grad_norm, one.grad_norm, atol=1e-12, rtol=1e-10)
        assert side.test_accuracy == one.test_accuracy
    assert torch.get_num_threads() == threads, "the intra-op thread count is restored"


def test_a_failing_variant_stops_the_side_by_side_sweep_with_its_error():

    good = TrainConfig(model="fc", epochs=2000, batch_size=50, hidden=16)  # ~10 s each, if nothing stopped them
    bad = good.with_(batch_size=10_000)  # more than the 500 training images
    configs = [bad, good, good.with_(seed=1)]
    epochs_done = [0, 0, 0]

    def count(config):
        def progress(epoch, epochs, loss, acc):
            epochs_done[configs.index(config)] = epoch

        return progress

    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="batch_size 10000 exceeds the 500 training images"):
        train_side_by_side(configs, tiny_data(), count)
    assert max(epochs_done) < good.epochs, f"the other runs went on after the failure: {epochs_done}"
    assert torch.get_num_threads() == threads


def small_cnn(in_features: int, hidden: int, classes: int) -> torch.nn.Module:
    """A user's model factory, not one of the seed nets: a convolution, BatchNorm and no fc1/fc2."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * in_features, classes),
    )


def test_the_engine_trains_any_model_factory_and_the_cache_trains_what_it_cannot_batch_alone(device):
    tiny = tiny_data(device)
    by_function = TrainConfig(model=small_cnn, epochs=1, batch_size=50, dtype="float64")
    by_path = TrainConfig(model=f"{__name__}:small_cnn", epochs=1, batch_size=50, dtype="float64")
    assert by_function == by_path  # one cache key: the factory's import path
    assert by_function.model == f"{__name__}:small_cnn"
    one = train(by_function, tiny)
    assert one.layers == ("0", "4")  # the weighted layers: the convolution and the Linear
    # the cache batches the seed net's variants on accelerators; this model trains alone there
    seed_net = TrainConfig(model="fc", epochs=1, batch_size=50, dtype="float64", hidden=16)
    many = TrainingCache().many({"cnn": by_path, "fc": seed_net}, tiny)
    torch.testing.assert_close(many["cnn"].loss, one.loss, atol=1e-12, rtol=1e-10)
    # across processes (pytest-xdist) the config travels as plain data and comes back the same
    assert type(one).from_state(one.to_state()).config == by_function


def test_a_model_that_cannot_be_found_again_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="is not importable: define it at module level"):
        TrainConfig(model=lambda d, h, c: torch.nn.Linear(d, c))
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; accepted: fc, fc-bn, mlp-strong or an import path"):
        TrainConfig(model="resnet")
