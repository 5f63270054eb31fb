"""Inputs and outputs: image folders, shards and tables, image decoding, shard outputs,
exports and run files. Nothing here imports a stage module.
"""
