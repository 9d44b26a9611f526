"""kNN-VC (Baas et al. 2023) and kNN-TTS (Hajal et al. 2025) over our features, and their vocoder.

- :mod:`icefall.vc.knn`: cosine kNN matching, the kNN-TTS interpolation, prematching;
- :mod:`icefall.vc.features`: wav -> frames (fbank, or a layer of any model ``load_model`` reads);
- :mod:`icefall.vc.vocoder`: a small HiFi-GAN-style generator, its data and its training;
- :mod:`icefall.vc.convert`: voice conversion and text-to-speech in a target voice;
- :mod:`icefall.vc.evaluate`: speaker similarity (by the probing issue's ASV, :mod:`icefall.probe.asv`)
  and intelligibility of converted speech.

See docs/knn-vc.md.
"""
