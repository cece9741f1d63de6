"""NIR exchange of spatial models: per-synapse delays as ``nir.Delay`` nodes, exactly.

``export_to_nir`` and ``import_from_nir`` extend spikingjelly's ``nir_exchange`` (spikingjelly
>= 2.0.0, with ``nir`` and ``nirtorch``: ``pip install 'sj-spatial[nir]'``); the convention
and what each target takes are in ``docs/deploy.md``.
"""

from .api import NIRUnavailableError, export_to_nir, import_from_nir, require_nir
from .lags import DelayBudget, DelayBudgetError, LagBins, bin_by_lag, deployed_lags

__all__ = [
    "DelayBudget",
    "DelayBudgetError",
    "LagBins",
    "NIRUnavailableError",
    "bin_by_lag",
    "deployed_lags",
    "export_to_nir",
    "import_from_nir",
    "require_nir",
]
