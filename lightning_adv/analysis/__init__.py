"""Properties of networks (thesis chapter 6) as pure functions; no Lightning here.

* :mod:`.spectral`: singular values of conv (2-D FFT, Sedghi et al.) and linear layers,
  RankMin / RankMax projections, effective rank ``||W||_* / ||W||_F``;
* :mod:`.ntk`: the empirical NTK through ``torch.func`` and its correlation / change;
* :mod:`.hessian`: Hessian-vector products of a data-set loss, Lanczos and shifted power
  iteration for the extreme eigenvalues;
* :mod:`.local_minima`: the Lemma 6.1 construction and the bias initialisations.

The callbacks in ``callbacks/`` schedule these during training.
"""
from ._utils import trainable_parameters
from .hessian import DatasetHessian, EigenResult, extreme_eigenvalues, full_hessian, lanczos, power_iteration
from .local_minima import (
    INIT_KINDS,
    first_linear_inputs,
    fit_linear_classifier,
    he_uniform_init_,
    init_biases_,
    lemma61_init_,
    lemma61_layers,
    linear_layers,
    zero_init_,
)
from .ntk import empirical_ntk, empirical_ntk_loop, kernel_correlation, kernel_relative_change, parameter_norm
from .spectral import (
    RANK_MODES,
    conv_operator_matrix,
    conv_singular_values,
    conv_transfer_matrices,
    effective_rank,
    effective_ranks,
    layer_input_sizes,
    layer_singular_values,
    linear_singular_values,
    operator_layers,
    project_conv,
    project_linear,
    project_model_,
    project_singular_values,
)

__all__ = [
    "DatasetHessian", "EigenResult", "extreme_eigenvalues", "full_hessian", "lanczos", "power_iteration",
    "INIT_KINDS", "first_linear_inputs", "fit_linear_classifier", "he_uniform_init_", "init_biases_", "lemma61_init_",
    "lemma61_layers",
    "linear_layers", "zero_init_",
    "empirical_ntk", "empirical_ntk_loop", "kernel_correlation", "kernel_relative_change", "parameter_norm",
    "RANK_MODES", "conv_operator_matrix", "conv_singular_values", "conv_transfer_matrices", "effective_rank",
    "effective_ranks", "layer_input_sizes", "layer_singular_values", "linear_singular_values", "operator_layers",
    "project_conv", "project_linear", "project_model_", "project_singular_values",
    "trainable_parameters",
]
