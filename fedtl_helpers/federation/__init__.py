"""The round and what runs it: one client's local training, the simulation (data, model, trainer),
the round's stages built once from the config, the round itself (``run_round``, the only loop
over a round's clients, with one clients runner per path), the server loop, personalisation and
evaluation.
"""
