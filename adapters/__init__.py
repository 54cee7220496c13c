"""Built-in discriminator-head adapters (shipped as ``ogan_plugin.adapters``).

One head family per file; each implements the ``ogan_adapt_discriminator`` hook.
"""
