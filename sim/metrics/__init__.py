"""Pure metric functions, jit- and vmap-able unless a docstring says otherwise.

- ``sequences``: diversity of sampled token sequences (n-gram entropy, distinct-n,
  self-BLEU, support coverage, gzip compression ratio) and the rate at which a planted
  continuation follows its trigger (``trait_rate``).
- ``distributions``: quantities of probability vectors (entropy, tail mass, empirical
  frequencies); KL between log-probabilities is ``sim.objectives.kl``.
- ``vendi``: the Vendi score of a sample under a feature map.
- ``classification``: accuracy, agreement, calibration (ECE) and group-fairness gaps.
- ``fidelity``: precision, recall, density and coverage of generated points against real
  ones (k nearest neighbours).
- ``retention``: metrics relative to generation 0 (retention, cost reduction, trait
  amplification), computed after a run.
"""
