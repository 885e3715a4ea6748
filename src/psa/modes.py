"""The six training modes of PSA and their groups."""

MODES = ("none", "decay", "dropout", "full", "hidden", "output")
BASELINE_MODES = ("none", "decay", "dropout")
ABLATIVE_MODES = ("full", "hidden", "output")

# As the result tables title them (``* None: Mean=...`` and the trial-table header).
MODE_TITLES = {mode: mode.capitalize() for mode in MODES}
