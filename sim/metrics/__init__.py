"""Pure metric functions, jit- and vmap-able unless a docstring says otherwise.

- ``sequences``: diversity of sampled token sequences (n-gram entropy, distinct-n,
  self-BLEU, support coverage, gzip compression ratio).
- ``distributions``: quantities of probability vectors (entropy, KL, tail mass,
  rank-frequency).
- ``vendi``: the Vendi score of a sample under a feature map.
"""
