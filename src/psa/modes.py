"""The six training modes of PSA, their groups, and the choices of the method's flags."""

MODES = ("none", "decay", "dropout", "full", "hidden", "output")
BASELINE_MODES = ("none", "decay", "dropout")
ABLATIVE_MODES = ("full", "hidden", "output")

# As the result tables title them (``* None: Mean=...`` and the trial-table header).
MODE_TITLES = {mode: mode.capitalize() for mode in MODES}

# hidden mode's targets and full mode's draw (see psa.ablation); the first is upstream's.
HIDDEN_TARGETS = ("upstream", "corrected")
FULL_SAMPLING = ("layer", "neuron")
