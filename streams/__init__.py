"""The streaming layer: the faust app built from configuration, topics, the Avro codec.

Imports the science core (``calibstream``), never the other way round.
"""
