"""Hub-hosted CR-JEPA embeddings: write, publish, load and search an archive without re-embedding it.

An embeddings folder (a Hub dataset repo once pushed) holds
  data/<split>-*.parquet id, labels (ClassLabel ids), metadata columns, one fixed-size float32 list column per
                         sensor and space (``s1_unified``, ``s2_cross``, ...)
  README.md              dataset card (YAML ``configs`` so ``load_dataset(repo)`` works)
  faiss/<column>/        one faiss index per vector column (`crjepa.search.index`: index.faiss + sidecars)
  embeddings_info.json   dimension, sensors, spaces, the model fingerprint and model repo, index kinds.
The model fingerprint ties an archive and its indices to the exact weights that produced them: searching with
another model's query embeddings would silently return nonsense, so it is an error instead.

    crjepa.hub.archive.format      the folder's names, embeddings_info.json checks, vector columns
    crjepa.hub.archive.provenance  model fingerprint and config summary, the data source records
    crjepa.hub.archive.indices     one faiss index per vector column; `add_indices` (`crjepa index`)
    crjepa.hub.archive.writer      `write_embeddings_dataset` (an archive in one go)
    crjepa.hub.archive.search      `EmbeddingArchive`, `Hit`, image queries
    crjepa.hub.archive.loading     `load_embeddings` (a folder or a Hub repo, checked)

Not imported by the model (remote code): this package may use faiss, pyarrow, datasets and huggingface_hub.
"""

from crjepa.hub.archive.format import EmbeddingsError, read_vector_column
from crjepa.hub.archive.indices import add_indices, build_indices
from crjepa.hub.archive.loading import load_embeddings
from crjepa.hub.archive.provenance import config_summary, model_fingerprint
from crjepa.hub.archive.search import EmbeddingArchive, Hit
from crjepa.hub.archive.writer import write_embeddings_dataset

__all__ = [
    "EmbeddingArchive",
    "EmbeddingsError",
    "Hit",
    "add_indices",
    "build_indices",
    "config_summary",
    "load_embeddings",
    "model_fingerprint",
    "read_vector_column",
    "write_embeddings_dataset",
]
