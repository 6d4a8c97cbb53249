"""The original GsRCL / AF-RCL tool's published references, read safely and turned into gsrcl references.

``gsrcl import`` converts one original reference folder (or its zip) into a gsrcl reference
(`gsrcl.original.importer`); ``gsrcl references available`` / ``download`` list and fetch the published ones
(`gsrcl.original.published`, `gsrcl.original.download`). The original's files are torch checkpoints (read with
``weights_only=True``) and joblib pickles, read by `gsrcl.original.joblib_reader`, which rebuilds only an
allow-list of plain data and never imports or runs code from the file. After import nothing pickled remains.
"""
