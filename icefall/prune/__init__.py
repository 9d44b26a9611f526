"""Pruning: self-pinching gates (one-pass), magnitude baselines, compact export, reports.

See docs/pruning.md.
"""
from icefall.prune.baselines import mixed_sparsity_prune, uniform_magnitude_prune
from icefall.prune.export import export_compact, load_compact, load_compact_state_dict
from icefall.prune.gates import (
    TRANSFORMER_PATTERNS,
    ZIPFORMER_PATTERNS,
    GateController,
    add_gates,
    current_sparsity,
    gate_parameters,
    gate_regularizer,
    remove_gates,
)
from icefall.prune.report import sparsity_table, write_sparsity_report
