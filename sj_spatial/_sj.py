"""spikingjelly's modules, imported once without the FutureWarning that spikingjelly
0.0.0.0.14 raises at import (it scripts its neuron helpers with ``torch.jit.script``,
which torch deprecates). The warning is about spikingjelly's code, not the user's, and
would be printed by every ``sj-spatial`` command; later warnings are left alone.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
    from spikingjelly.activation_based import base, functional, layer, neuron, surrogate  # noqa: F401
