"""The speech application's building blocks, built on the metric library, never the other way.

* ``audio`` — files or arrays to mono float32 at 16 kHz (band-limited resampling), audio files in a folder.
* ``synth`` — offline speech: espeak-ng corpora (sentences, keywords, speakers), cached.
* ``models`` — the Hugging Face model families (a registry), building, loading and checking a model.
* ``runner`` — the one pad-and-mask batch builder and the hidden-state runner.
* ``tasks`` — labelled audio for probes (built-in tasks, label folders) and the one train/test split.
* ``probes`` — mean-pooled features and the linear probe.
* ``inference`` — eval mode, thread count, parameter count and timing of a model.
* ``files`` — files written whole or not at all.

The apps (``fastsim.analysis``, ``fastsim.prune``, ``fastsim.mimic``) are built from these.
"""
