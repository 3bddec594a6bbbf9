"""crjepa: the application around the CR-JEPA model (data loading, evaluation, search, Hub, training, CLI).

The model itself (what travels into a checkpoint as remote code) is the sibling package ``modeling_crjepa``;
this package depends on it, never the reverse. Importing ``crjepa`` or a small helper of it imports no torch:
each sub-package imports what it needs.

    crjepa.utils      atomic writes, packaged resources (configs, card templates)
    crjepa.data       the row schema and band orders, labels, image readers, data sets -> batches
    crjepa.eval       metrics (+ evaluate modules), four-direction retrieval evaluation, result grids
    crjepa.search     faiss indices
    crjepa.hub        embeddings archives, model / dataset / embeddings cards, Hub access and uploads
    crjepa.train      the training run: configuration, data, sampler, masks, optimiser, schedule, checkpoints, loop
    crjepa.baselines  X-JEPA-style and contrastive baselines for the ablations
    crjepa.app        the search app in the browser (Gradio, optional) and its Hugging Face Space export
    crjepa.cli        the ``crjepa`` command

docs/ARCHITECTURE.md is the map (layers, data flow, one home per fact).
"""

__version__ = "0.2.0"
