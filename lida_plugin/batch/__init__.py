"""``lida batch``: attribute an archive (a folder, a glob, a list, an object store) into Parquet.

* :mod:`.sources`: SOURCE to asset paths; reading an asset through pyarrow/fsspec filesystems.
* :mod:`.sink`: the Parquet parts under DEST (atomic commits, resume, each asset once).
* :mod:`.worker`: what a worker does with one :class:`~lida_plugin.attribute.Attributor`.
* :mod:`.local`: the default engine (worker processes, one ONNX Runtime session each).
* :mod:`.ray_engine`: the same job on Ray Data (``pip install "lida-plugin[ray]"``).
* :mod:`.command`: the ``lida batch`` subcommand.

Needs the ``batch`` extra (pyarrow): ``pip install "lida-plugin[batch]"``.
"""
