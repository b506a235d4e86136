"""The conformance kit (ganbench.testing): ganbench's built-ins pass it, the guide's examples
pass it, and each broken contract fails with a message naming the plugin, object and check."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from ganbench import Architecture, Dataset, LoadedData, Loss, Metric
from ganbench.api import MetricResult
from ganbench.testing import (
    FAILED, PASSED, SKIPPED, STANDARD_SHAPES, ConformanceError, check_distribution, check_object,
    conformance_tests,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` beside the checkout: the MNIST test split, so the kit loads real data."""

# ganbench's own plugins pass the kit that third parties run: one test per built-in object.
test_builtin_plugin = conformance_tests("ganbench", data_dir=str(SHARED_DATA) if SHARED_DATA.is_dir() else None)


def test_the_builtin_kit_covers_every_kind_and_every_standard_shape():
    report = check_distribution("ganbench", load_datasets=False)
    subjects = {result.subject for result in report.results}
    assert {"loss 'wgan-gp'", "architecture 'dcgan'", "dataset 'ring8'", "metric 'modes'"} <= subjects
    checks = {result.check for result in report.results if result.subject == "architecture 'mlp'"}
    for shape in STANDARD_SHAPES:
        assert {f"generator-output {shape}", f"gradients {shape}", f"determinism {shape}"} <= checks
    skipped = [r for r in report.results if r.outcome == SKIPPED and r.subject == "architecture 'dcgan'"]
    assert [r.check for r in skipped] == ["shape (2,)"]
    assert "dcgan models images" in skipped[0].detail


# --- a broken plugin, installed: the failure names distribution:entry point, object and check


WRONG_SHAPE_PLUGIN = """
    from torch import nn
    from ganbench import Architecture, hookimpl

    class WrongShape(Architecture):
        name = "wrong-shape"
        description = "Its generator forgets one output value"
        defaults = {"latent_dim": 2}

        def unsupported_reason(self, data_shape, params):
            return None if data_shape == (2,) else "points only"

        def build(self, data_shape, params):
            generator = nn.Linear(params["latent_dim"], data_shape[0] + 1)
            discriminator = nn.Sequential(nn.Linear(data_shape[0], 1), nn.Flatten(0))
            return generator, discriminator

    @hookimpl
    def register_architectures(register):
        register(WrongShape())
"""


def test_a_generator_of_the_wrong_shape_fails_naming_the_plugin_the_object_and_the_check(fake_distributions):
    fake_distributions("ganbench-broken", {"ganbench_broken": WRONG_SHAPE_PLUGIN}, {"broken": "ganbench_broken"})
    with pytest.raises(ConformanceError) as error:
        check_distribution("ganbench-broken")
    message = str(error.value)
    assert message.startswith("ganbench-broken: 1 of ")
    assert ("ganbench-broken:broken architecture 'wrong-shape': check generator-output (2,) failed: the generator "
            "maps noise [4, 2] to shape (4, 3); expected [batch, *data_shape] = (4, 2)") in message
    report = check_distribution("ganbench-broken", raise_on_failure=False)
    assert not report.ok and [r.check for r in report.failures] == ["generator-output (2,)"]
    assert {r.check for r in report.skipped} == {"gradients (2,)"} | {f"shape {s}" for s in STANDARD_SHAPES[1:]}


def test_conformance_tests_makes_one_pytest_case_per_object(fake_distributions):
    fake_distributions("ganbench-broken", {"ganbench_broken": WRONG_SHAPE_PLUGIN}, {"broken": "ganbench_broken"})
    test = conformance_tests("ganbench-broken")
    (mark,) = test.pytestmark
    assert mark.args == ("subject", ["distribution", "architecture:wrong-shape"])
    test("distribution")
    with pytest.raises(ConformanceError, match="check generator-output \\(2,\\) failed"):
        test("architecture:wrong-shape")


def test_packaging_problems_fail_the_distribution_checks(fake_distributions):
    duplicate = WRONG_SHAPE_PLUGIN.replace('"wrong-shape"', '"mlp"')
    fake_distributions("ganbench-sloppy", {"ganbench_sloppy": duplicate}, {"ganbench.sloppy": "ganbench_sloppy"},
                       requires=("torch",))
    report = check_distribution("ganbench-sloppy", raise_on_failure=False)
    failures = {r.check: str(r) for r in report.failures}
    assert "starts with 'ganbench.', which is reserved" in failures["entry-point-name"]
    assert "does not depend on ganbench" in failures["declares-ganbench-versions"]
    assert failures["name"].startswith("ganbench-sloppy:ganbench.sloppy architecture 'mlp': check name failed: "
                                       "architecture name 'mlp' is registered by ")
    assert "ganbench:ganbench.architectures" in failures["name"]


def test_a_distribution_that_is_not_installed_says_how_to_install_it():
    with pytest.raises(ConformanceError, match="ganbench-not-installed is not installed in this environment; "
                                               "install it with `pip install -e .`"):
        check_distribution("ganbench-not-installed")


def test_a_plugin_that_ganbench_skips_fails_the_loads_check(fake_distributions):
    fake_distributions("ganbench-old", {"ganbench_old": "raise AssertionError('never imported')"},
                       {"old": "ganbench_old"}, requires=("ganbench<0.1",))
    report = check_distribution("ganbench-old", raise_on_failure=False)
    assert [str(r) for r in report.failures] == [
        "ganbench-old:old distribution: check loads failed: ganbench skipped this plugin: requires ganbench<0.1 "
        "but ganbench 0.1.0 is installed; upgrade the plugin or ganbench"]


# --- each contract, broken on purpose: check_object on objects that are not installed --------


def _mlp(data_shape, latent_dim, *, tanh=True, detach=False, extra_logits=0):
    import math

    import torch
    from torch import nn

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(latent_dim, math.prod(data_shape))

        def forward(self, z):
            x = self.linear(z)
            x = torch.tanh(x) if tanh else x * 10
            return (x.detach() if detach else x).view(len(z), *data_shape)

    discriminator = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 1 + extra_logits))
    return Generator(), discriminator


class GoodArchitecture(Architecture):
    name = "good-arch"
    description = "A linear G and D"
    defaults = {"latent_dim": 3}
    options: dict = {}

    def build(self, data_shape, params):
        return _mlp(data_shape, params["latent_dim"], **self.options)


class NoTanh(GoodArchitecture):
    options = {"tanh": False}


class DetachedGenerator(GoodArchitecture):
    options = {"detach": True}


class TwoLogits(GoodArchitecture):
    options = {"extra_logits": 1}


class IgnoresTheSeed(GoodArchitecture):
    def build(self, data_shape, params):
        import torch

        state = torch.get_rng_state()
        torch.manual_seed(42)
        try:
            return super().build(data_shape, params)
        finally:
            torch.set_rng_state(state)


class UnseededInit(GoodArchitecture):
    def build(self, data_shape, params):
        import os

        import torch

        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
        return super().build(data_shape, params)


class EmptyReason(GoodArchitecture):
    def unsupported_reason(self, data_shape, params):
        return "" if len(data_shape) == 1 else None


class SupportsNothing(GoodArchitecture):
    def unsupported_reason(self, data_shape, params):
        return "only 5x5 images"


def _ns_d(real, fake):
    import torch.nn.functional as F

    return F.softplus(-real).mean() + F.softplus(fake).mean()


class GoodLoss(Loss):
    name = "good-loss"
    description = "Non-saturating"

    def discriminator_loss(self, real_logits, fake_logits, params):
        return _ns_d(real_logits, fake_logits)

    def generator_loss(self, fake_logits, real_logits, params):
        import torch.nn.functional as F

        return F.softplus(-fake_logits).mean()


class MaximisedDiscriminatorLoss(GoodLoss):
    def discriminator_loss(self, real_logits, fake_logits, params):
        return -_ns_d(real_logits, fake_logits)


class MaximisedGeneratorLoss(GoodLoss):
    def generator_loss(self, fake_logits, real_logits, params):
        return -super().generator_loss(fake_logits, real_logits, params)


class LogSigmoid(GoodLoss):
    def discriminator_loss(self, real_logits, fake_logits, params):
        import torch

        return -(torch.log(torch.sigmoid(real_logits)) + torch.log(1 - torch.sigmoid(fake_logits))).mean()


class PerSample(GoodLoss):
    def discriminator_loss(self, real_logits, fake_logits, params):
        import torch.nn.functional as F

        return F.softplus(-real_logits) + F.softplus(fake_logits)


class SecretlyRelativistic(GoodLoss):
    def generator_loss(self, fake_logits, real_logits, params):
        return (real_logits - fake_logits).mean()


class VectorPenalty(GoodLoss):
    def penalty(self, discriminator, real, fake, params):
        return discriminator(real).square()


class UnseededPenalty(GoodLoss):
    def penalty(self, discriminator, real, fake, params):
        import random

        return discriminator(real).mean() * random.random()


class SgdLoss(GoodLoss):
    defaults = {"optimizer": "sgd"}


class GoodPoints(Dataset):
    name = "good-points"
    description = "Gaussian points"
    source = "synthetic"
    options: dict = {}

    def data_shape(self, params):
        return self.options.get("shape", (2,))

    def load(self, request):
        import torch

        samples = torch.randn(100, 2, generator=torch.Generator().manual_seed(request.seed))
        return LoadedData(samples * self.options.get("scale", 1.0), None, request.split)


class ShapeWithoutChannels(GoodPoints):
    options = {"shape": (28, 28)}


class ImagesOutOfRange(GoodPoints):
    def data_shape(self, params):
        return (1, 2, 2)

    def load(self, request):
        import torch

        return LoadedData(torch.full((10, 1, 2, 2), 255.0), None, request.split)


class LoadCrashes(GoodPoints):
    def load(self, request):
        raise RuntimeError("the parser hit an unexpected byte")


class UnseededLoad(GoodPoints):
    def load(self, request):
        import torch

        return LoadedData(torch.randn(100, 2), None, request.split)


class GoodMetric(Metric):
    name = "good-metric"
    description = "Mean of generated points"
    options: dict = {}

    def evaluate(self, context):
        import torch

        samples = context.generate(100)
        noise = torch.rand(()).item() if self.options.get("unseeded") else 0.0
        values = {"generated_mean": samples.mean().item() + noise}
        return values if self.options.get("plain_dict") else MetricResult(values, {"samples": "100"})


class PlainDictMetric(GoodMetric):
    options = {"plain_dict": True}


class UnseededMetric(GoodMetric):
    options = {"unseeded": True}


class ZeroReasonMetric(GoodMetric):
    def unsupported_reason(self, dataset, data_shape):
        return 0


BROKEN = [
    (NoTanh(), "generator-output (1, 28, 28)", "pixels must be in [-1, 1] (end with tanh)"),
    (DetachedGenerator(), "gradients (2,)", "no gradient reaches the generator's parameter(s) linear.weight"),
    (TwoLogits(), "discriminator-output (2,)", "to shape (4, 2); expected one raw logit per sample"),
    (IgnoresTheSeed(), "determinism (2,)", "torch.manual_seed(0) and torch.manual_seed(1) are identical"),
    (UnseededInit(), "determinism (2,)", "two builds after torch.manual_seed(0) differ"),
    (EmptyReason(), "unsupported-reason (2,)", "unsupported_reason returned ''"),
    (SupportsNothing(), "supports-a-shape", "supports none of the shapes tried"),
    (MaximisedDiscriminatorLoss(), "discriminator-loss-direction", "D's loss must be lower when D is right"),
    (MaximisedGeneratorLoss(), "generator-loss-direction", "it must fall as D rates the fakes as more real"),
    (LogSigmoid(), "discriminator-loss", "at logits of magnitude up to 60.0 (compute with softplus"),
    (PerSample(), "discriminator-loss", "returned shape (8,) (torch.float32); return a 0-dim float tensor"),
    (SecretlyRelativistic(), "generator-loss", "unless the loss sets generator_needs_real_logits = True"),
    (VectorPenalty(), "penalty (2,)", "penalty returned shape (8,)"),
    (UnseededPenalty(), "determinism", "the same inputs after the same torch.manual_seed gave"),
    (SgdLoss(), "defaults", "optimizer 'sgd' is not one of"),
    (ShapeWithoutChannels(), "data-shape", "data_shape returned (28, 28)"),
    (ImagesOutOfRange(), "loaded-data", "image pixels must be in [-1, 1]"),
    (LoadCrashes(), "load", "load() raised RuntimeError: the parser hit an unexpected byte"),
    (UnseededLoad(), "load-determinism", "two loads of the same request (same seed) returned different data"),
    (PlainDictMetric(), "evaluate (grid25)", "evaluate() must return a ganbench.api.MetricResult"),
    (UnseededMetric(), "evaluate (grid25)", "two evaluations of the same generator differ in generated_mean"),
    (ZeroReasonMetric(), "unsupported-reason", "returned 0; return None or a sentence"),
]


@pytest.mark.parametrize("obj, check, fragment", BROKEN, ids=[type(case[0]).__name__ for case in BROKEN])
def test_a_broken_contract_fails_its_check_with_a_sentence(obj, check, fragment):
    report = check_object(obj, raise_on_failure=False)
    failures = {result.check: result for result in report.failures}
    assert check in failures, report.summary()
    # Only that check fails (architectures: at every shape), and nothing cascades from it.
    assert {name.split(" (")[0] for name in failures} == {check.split(" (")[0]}, report.summary()
    assert fragment in failures[check].detail
    kind = type(obj).__mro__[-2].__name__.lower()  # the plugin base class
    assert str(failures[check]).startswith(f"(unregistered) {kind} '{obj.name}': check {check} failed: ")
    with pytest.raises(ConformanceError, match=re.escape(f"(unregistered) {kind} '{obj.name}': check {check}")):
        check_object(obj)


@pytest.mark.parametrize("obj", [GoodArchitecture(), GoodLoss(), GoodPoints(), GoodMetric()],
                         ids=lambda obj: obj.name)
def test_objects_that_keep_their_contract_pass(obj):
    report = check_object(obj)
    assert report.ok and report.results
    assert all(result.outcome in (PASSED, SKIPPED) for result in report.results)


def test_a_dataset_that_would_download_is_skipped_with_the_network_blocked():
    class Downloads(GoodPoints):
        def load(self, request):
            import urllib.request

            urllib.request.urlopen("http://example.com/points.npy", timeout=5)

    original = socket.create_connection
    report = check_object(Downloads())
    (load,) = [r for r in report.results if r.check == "load"]
    assert load.outcome == SKIPPED and "it tried to download (blocked)" in load.detail
    assert socket.create_connection is original


def test_check_object_rejects_what_is_not_a_plugin_object():
    with pytest.raises(TypeError, match="is not an instance of an Architecture, Loss, Dataset or Metric"):
        check_object(object())


def test_every_example_in_the_guide_passes_the_kit(fake_distributions, guide_files):
    modules = {Path(path).stem: text for path, text in guide_files.items()
               if Path(path).name.startswith("ganbench_") and path.endswith(".py")}
    assert len(modules) >= 5, sorted(modules)
    fake_distributions("ganbench-guide-examples", modules, {name.removeprefix("ganbench_"): name for name in modules})
    report = check_distribution("ganbench-guide-examples")
    kinds = {result.subject.split()[0] for result in report.results}
    assert kinds == {"distribution", "architecture", "loss", "dataset", "metric"}
    assert not [r for r in report.results if r.outcome == FAILED]
