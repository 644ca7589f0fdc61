"""The inference engine: continuous batching of generation jobs on one resident model.

torch and transformers only, nothing else of ours (no Django), so it can be driven and tested
alone with a small local model. ``engine.engine.BatchingEngine`` is the entry point; the model
comes from ``engine.registry``.
"""

import os

# huggingface_hub reads these once, when it is first imported, so they must be
# set before anything imports transformers (every module of this package does so
# lazily, after this runs). Models are always local here: a missing file must
# fail fast, not turn into a network request or a hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# from_pretrained draws a tqdm bar on stderr, which would garble worker logs.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
