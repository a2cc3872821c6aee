"""Evaluation of attribution as retrieval: the paper's protocol as ``lida eval``.

numpy only (matplotlib is imported lazily for plots; the conditions that need training import
``exporters`` lazily and need the ``train`` extra). Modules:

* :mod:`.metrics`: Rank-1, AP/mAP over a ranked gallery (deterministic, pessimistic ties),
  ROC AUC, confusion matrices, summaries over seeds;
* :mod:`.corpus`: the ``../shared/data`` layout and the train/held-out split shared with training;
* :mod:`.episodes`: the seeded k-shot gallery/query sampler;
* :mod:`.embed`: embedding sources (an ONNX model through the runtime, raw fingerprints) and the
  robustness transforms;
* :mod:`.run`: the evaluation driver; :mod:`.report`: JSON, Markdown and plots;
* :mod:`.training`: the conditions that train (few-shot adaptation, trained baselines);
* :mod:`.cli`: the ``lida eval`` subcommand.

``docs/evaluation.md`` documents the protocol.
"""
