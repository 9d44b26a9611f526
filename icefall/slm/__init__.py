"""Spoken language modelling on discrete units: a unit LM (``lm``), its training (``train``) and
zero-shot spoken-LM benchmarks synthesized offline (``benchmarks``)."""
