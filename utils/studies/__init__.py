"""The studies on the paper's own data, one module per design (``python -m utils study``).

- ``fractions``: the first SVAMP study (recipe, ablation, 25/50/100 % of the data over 3 seeds);
- ``cv``: k-fold cross-validation over every item of a small task (the SVAMP study);
- ``sizes``: e-SNLI accuracy against training size, epoch-capped (the committed 3-seed study);
- ``steps``: e-SNLI again at matched optimizer steps, every cell to its plateau, 5 seeds;
- ``esnli_split``: the premise-disjoint e-SNLI split both e-SNLI designs share;
- ``common``: the study config, the PaLM teacher, the paper's numbers, publishing.
"""
