"""Pure metric functions, jit- and vmap-able unless a docstring says otherwise.

- ``sequences``: diversity of sampled token sequences (n-gram entropy, distinct-n,
  self-BLEU, support coverage, gzip compression ratio).
- ``distributions``: quantities of probability vectors (entropy, tail mass, empirical
  frequencies); KL between log-probabilities is ``sim.objectives.kl``.
- ``vendi``: the Vendi score of a sample under a feature map.
- ``classification``: accuracy, agreement, calibration (ECE) and group-fairness gaps.
- ``retention``: retention and cost reduction relative to generation 0.
"""
