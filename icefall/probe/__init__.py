"""SUPERB-style probing of frozen pretrained models, and upstream interfaces for other toolkits.

- :mod:`icefall.probe.upstream`: a frozen upstream (any checkpoint ``load_model`` reads, or
  ``"fbank"``) and its per-split layer features, cached on disk;
- :mod:`icefall.probe.model`: the learnable softmax-weighted layer sum (SUPERB's featurizer) and
  the small task heads;
- :mod:`icefall.probe.tasks`: PR, ASR, SID, ASV, KS, QbE and speaking-rate tasks derived from the
  mini corpus' labels and alignments, with splits that leak nothing;
- :mod:`icefall.probe.metrics`: PER/WER, EER, DTW, MAP and MTWV;
- :mod:`icefall.probe.train`: a probe trained by the shared :class:`~icefall.trainer.Trainer`
  under a fixed budget, then scored;
- :mod:`icefall.probe.asv`: the ASV probe as a speaker embedding of any waveform (kNN-VC's
  speaker similarity);
- :mod:`icefall.probe.hear`, :mod:`icefall.probe.s3prl`: HEAR- and s3prl-style upstream APIs.

The protocol is written down in ``docs/probing.md``.
"""
