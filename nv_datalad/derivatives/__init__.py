"""Derivatives made from the dataset's images, each recorded with ``datalad run``.

Resampling: ``grid`` (the target grid, nilearn's 3 mm one by default), ``manifest`` (the
committed work list a run record names) and ``resample`` (the worker, its command line and the
recorded run), byte-for-byte deterministic so ``datalad rerun`` reproduces it. Neurosynth:
``neurosynth`` (per-image words from the decoder and the (images × vocabulary) matrix nilearn
builds from them) and ``misses`` (which lookups failed lately, and when to ask again).
``runrecord`` is the one ``datalad run`` wrapper both steps share.

Heavy imports (nilearn, datalad, scikit-learn) happen inside functions so that importing this
package, and ``nv-datalad --help``, stay fast.
"""
