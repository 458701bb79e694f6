"""Derivatives made from the dataset's images, each recorded with ``datalad run``.

``resample``: images resampled onto nilearn's 3 mm grid (or another grid), byte-for-byte
deterministic so ``datalad rerun`` reproduces them. ``neurosynth``: per-image Neurosynth words
fetched from the decoder and the (images × vocabulary) matrix nilearn builds from them.

Heavy imports (nilearn, datalad, scikit-learn) happen inside functions so that importing this
package, and ``nv-datalad --help``, stay fast.
"""
