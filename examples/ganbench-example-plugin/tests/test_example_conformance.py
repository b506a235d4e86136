"""The plugin's own tests: ganbench's conformance kit, and RaGAN against the paper's formula.

Run with the plugin installed (``pip install -e '.[test]'``), so ganbench finds it through
its entry point exactly as users will.
"""

import math

from ganbench.testing import conformance_tests

from ganbench_example_plugin.ragan import ragan_losses

# One test per object the distribution registers, plus one for the distribution itself.
test_conformance = conformance_tests("ganbench-example-plugin")


def softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def test_ragan_matches_the_papers_formula():
    real, fake = [1.5, 0.2, -0.4], [-0.3, 0.4, -2.0]
    mean_real, mean_fake = sum(real) / 3, sum(fake) / 3
    # -log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x).
    expected_d = (sum(softplus(-(r - mean_fake)) for r in real) / 3
                  + sum(softplus(f - mean_real) for f in fake) / 3)
    expected_g = (sum(softplus(-(f - mean_real)) for f in fake) / 3
                  + sum(softplus(r - mean_fake) for r in real) / 3)
    discriminator_loss, generator_loss = ragan_losses(real, fake)
    assert math.isclose(discriminator_loss, expected_d, rel_tol=1e-12)
    assert math.isclose(generator_loss, expected_g, rel_tol=1e-12)
