"""Data for crjepa: `datasets` builders (synthetic, BigEarthNet/BEN-14K, DSRSID, CBRSIR_VS, generic paired CSV),
Parquet + dataset-card export to the Hugging Face Hub, and fast loading into torch batches.

Every builder writes the same row schema (docs/CONTRACTS.md): ``id``, one ``Array3D(C, H, W)`` per sensor at
native size and dtype, ``labels`` (class ids), ``split`` and metadata strings.
"""

from crjepa.data.schema import BUILDER_MODULES  # noqa: F401  (the registry lives with the schema)
