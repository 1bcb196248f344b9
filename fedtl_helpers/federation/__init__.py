"""The round and what runs it: one client's local training, the simulation (data, model, trainer),
the round's stages built once from the config, the round itself (client side, server side), the
server loop, personalisation and evaluation.

The modules are also importable under their old flat names (``fedtl_helpers.<module>``).
"""
