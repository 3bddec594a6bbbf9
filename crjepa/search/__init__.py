"""crjepa.search (see crjepa/__init__.py).

Importing it first picks OpenBLAS's kernels for faiss (``crjepa.search.blas``): the faiss-cpu wheels' OpenBLAS
misdetects recent Xeons and would run faiss's BLAS steps ~5x slower.
"""

from crjepa.search.blas import choose_openblas_kernel

choose_openblas_kernel()
