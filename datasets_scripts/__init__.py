"""Data for crjepa: `datasets` builders (synthetic, BigEarthNet/BEN-14K, DSRSID, CBRSIR_VS, generic paired CSV),
Parquet + dataset-card export to the Hugging Face Hub, and fast loading into torch batches.

Every builder writes the same row schema (docs/CONTRACTS.md): ``id``, one ``Array3D(C, H, W)`` per sensor at
native size and dtype, ``labels`` (class ids), ``split`` and metadata strings.
"""

BUILDER_MODULES: dict[str, str] = {
    "synthetic": "datasets_scripts.synthetic",
    "bigearthnet": "datasets_scripts.bigearthnet",
    "dsrsid": "datasets_scripts.dsrsid",
    "cbrsir_vs": "datasets_scripts.cbrsir_vs",
    "paired": "datasets_scripts.paired",
}
"""Builder name -> module exposing ``add_cli(subparsers)`` and ``run_cli(args)`` (and usually ``BUILDER_CLASS``)."""
