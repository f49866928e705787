"""Neural-network building blocks of anpvs."""

from anpvs.nn.beta_bernoulli import (
    BetaBernoulliDropout,
    bbd_layers,
    kumaraswamy_icdf,
    kumaraswamy_mean,
    mask_parameters,
    total_kl,
)

__all__ = [
    "BetaBernoulliDropout",
    "bbd_layers",
    "kumaraswamy_icdf",
    "kumaraswamy_mean",
    "mask_parameters",
    "total_kl",
]
