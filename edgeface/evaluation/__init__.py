"""Evaluation of a model and its settings: the protocols behind ``edgeface eval``.

- :mod:`.grid`: closed-set identification over a grid of ``k1``, ``k2`` and
  threshold, with micro precision and recall and weighted F1.
- :mod:`.openset`: false accept and false reject rates of enrolled people
  against strangers, over the threshold.
- :mod:`.lfw`: LFW View 2 verification, 10-fold accuracy and TAR at FAR.
- :mod:`.scale`: gallery load time and accuracy against the number of people.

Every protocol embeds its images through :mod:`.embeddings`, which caches
vectors by model fingerprint, detector settings and image content hash.
"""
