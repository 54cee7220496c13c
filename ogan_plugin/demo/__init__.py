"""``ogan-plugin demo``: a tool built on the library that trains an O-GAN on real data.

- :mod:`ogan_plugin.demo.command`: the command line (options, validation, the report);
- :mod:`ogan_plugin.demo.data`: the digits, image folders and arrays, the held-out split;
- :mod:`ogan_plugin.demo.models`: the DCGAN-like generator and discriminator it trains;
- :mod:`ogan_plugin.demo.train`: the training loops (O-GAN, and the plain GAN to compare);
- :mod:`ogan_plugin.demo.pictures`: samples, reconstructions, interpolations, curves.
"""
