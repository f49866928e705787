"""Dataset source formats, one module each, registered in :data:`anpvs.core.registry.DATA_FORMATS` with
:func:`anpvs.data.base.register_format` (every module here is imported on the first lookup)."""
