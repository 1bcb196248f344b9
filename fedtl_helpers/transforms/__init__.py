"""Pure functions over lists of weight arrays: the round's update transforms and aggregation rules
(FedAvg, robust rules, DP clipping and noise, update compression, secure aggregation, server
optimisers). They take plain arguments, never the config.
"""
